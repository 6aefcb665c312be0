// The Admin API client: generated from proto/ (src/gen), spoken over
// gRPC-web to the control plane that served this page.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Admin } from "@/gen/llmgw/v1/admin_pb";
import { getToken, signOut } from "./auth";

export type AdminClient = Client<typeof Admin>;

function baseUrl(): string {
  return window.location.origin;
}

function bearer(token: () => string): Interceptor {
  return (next) => async (req) => {
    const t = token();
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
}

/** Signs out when the API refuses the token, wherever the call was made. */
const signOutOnUnauthenticated: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) return res;
    // Server streams fail while they are read: watch the messages too.
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (e) {
          checkUnauthenticated(e);
          throw e;
        }
      })(),
    };
  } catch (e) {
    checkUnauthenticated(e);
    throw e;
  }
};

function checkUnauthenticated(e: unknown) {
  if (ConnectError.from(e).code === Code.Unauthenticated) {
    signOut("The control plane refused the admin token. Sign in again.");
  }
}

let client: AdminClient | undefined;

/** The shared client, sending the signed-in admin token. */
export function api(): AdminClient {
  client ??= createClient(
    Admin,
    createGrpcWebTransport({
      baseUrl: baseUrl(),
      interceptors: [signOutOnUnauthenticated, bearer(getToken)],
    }),
  );
  return client;
}

/** Checks a token before keeping it: true when the control plane accepts it. */
export async function checkToken(token: string): Promise<boolean> {
  const probe = createClient(
    Admin,
    createGrpcWebTransport({ baseUrl: baseUrl(), interceptors: [bearer(() => token)] }),
  );
  try {
    await probe.listDataPlanes({});
    return true;
  } catch (e) {
    if (ConnectError.from(e).code === Code.Unauthenticated) return false;
    throw e;
  }
}

const CODE_WORDS: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "Invalid input",
  [Code.NotFound]: "Not found",
  [Code.AlreadyExists]: "Already exists",
  [Code.PermissionDenied]: "Not allowed",
  [Code.FailedPrecondition]: "Refused",
  [Code.Aborted]: "Conflict, try again",
  [Code.OutOfRange]: "Out of range",
  [Code.Unimplemented]: "Not supported by this control plane",
  [Code.Internal]: "Server error",
  [Code.Unavailable]: "The control plane is unavailable",
  [Code.DeadlineExceeded]: "The control plane took too long",
  [Code.Unauthenticated]: "Not signed in",
  [Code.ResourceExhausted]: "Too much at once",
};

/** An API error in plain words, with the server's own message. */
export function errorMessage(e: unknown): string {
  const ce = ConnectError.from(e);
  const raw = ce.rawMessage.trim();
  if (ce.code === Code.Canceled) return "Cancelled";
  if (/failed to fetch|networkerror|load failed/i.test(raw)) {
    return "Cannot reach the control plane. Is it running?";
  }
  const words = CODE_WORDS[ce.code];
  if (!raw) return words ?? "Something went wrong";
  if (!words || ce.code === Code.Unknown) return capitalize(raw);
  return `${words}: ${raw}`;
}

export function isCode(e: unknown, code: Code): boolean {
  return ConnectError.from(e).code === code;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
