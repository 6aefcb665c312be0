import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { RequestLogSchema } from "@/gen/llmgw/v1/logs_pb";
import { LogNotArrived, pollLog } from "./poll-log";

/** A fake clock: sleeping advances it. */
function clock() {
  let t = 0;
  return { now: () => t, sleep: async (ms: number) => void (t += ms) };
}

describe("pollLog", () => {
  it("retries NOT_FOUND until the log arrives", async () => {
    const c = clock();
    let calls = 0;
    const log = create(RequestLogSchema, { id: "r1" });
    const got = await pollLog(
      async () => {
        calls += 1;
        if (calls < 4) throw new ConnectError("no such log", Code.NotFound);
        return log;
      },
      "r1",
      { ...c, intervalMs: 100 },
    );
    expect(got.id).toBe("r1");
    expect(calls).toBe(4);
    expect(c.now()).toBe(300);
  });

  it("gives up after the bound with a clear message", async () => {
    const c = clock();
    const p = pollLog(async () => Promise.reject(new ConnectError("no such log", Code.NotFound)), "r2", { ...c, intervalMs: 400, timeoutMs: 1000 });
    await expect(p).rejects.toBeInstanceOf(LogNotArrived);
    await expect(p).rejects.toThrow(/The log of request r2 has not arrived after 1 s/);
  });

  it("throws other errors at once", async () => {
    const c = clock();
    let calls = 0;
    const p = pollLog(
      async () => {
        calls += 1;
        throw new ConnectError("down", Code.Unavailable);
      },
      "r3",
      c,
    );
    await expect(p).rejects.toThrow(/down/);
    expect(calls).toBe(1);
  });

  it("stops when aborted", async () => {
    const ctl = new AbortController();
    ctl.abort();
    await expect(pollLog(async () => create(RequestLogSchema, {}), "r4", { signal: ctl.signal })).rejects.toThrow(/Aborted/);
  });
});
