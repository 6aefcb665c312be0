"""OpenAI's audio and image endpoints (#16) through the official `openai`
SDK: speech streamed as the mock sends it, transcriptions, translations
and image edits as multipart uploads that reach the upstream byte for byte
but for the `model` part (also after a failover), image generation, the
upload size limit (413 without the data plane's memory growing with the
upload), the cap on the temporary files of all uploads (503), a
failover's resend of a large upload under the first-byte timeout, model
types and protocols, streamed transcriptions, and the quantities in the
log (seconds of audio measured from a WAV or MP3 upload when a text answer
gives none)."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import Gateway, uid, wait_until

SPEECH_CHUNK = 4096
FIXTURES = Path(__file__).parent.parent.parent / "dataplane" / "testdata"


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    """A real mono 16-bit WAV file: a sawtooth of `seconds`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = int(seconds * rate)
        w.writeframes(b"".join(struct.pack("<h", (i * 97) % 20000 - 10000) for i in range(frames)))
    return out.getvalue()


def png_bytes() -> bytes:
    """A 1x1 PNG."""
    return base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg=="
    )


class Captured:
    """The bodies the SDK sent, through an httpx event hook."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def hook(self, request: httpx.Request) -> None:
        self.bodies.append(request.read())


def client_capturing(gw: Gateway, key: str) -> tuple[openai.OpenAI, Captured]:
    cap = Captured()
    http = httpx.Client(event_hooks={"request": [cap.hook]}, timeout=60, trust_env=False)
    return gw.openai(key, http_client=http, timeout=60), cap


def journal_body(rec: dict[str, Any]) -> bytes:
    return base64.b64decode(rec["body_base64"])


def with_model(body: bytes, old: str, new: str) -> bytes:
    """The multipart body with the `model` part's value replaced, every
    other byte as it was."""
    part = f'name="model"\r\n\r\n{old}\r\n'.encode()
    assert body.count(part) == 1, body[:400]
    return body.replace(part, f'name="model"\r\n\r\n{new}\r\n'.encode())


def log_of(gw: Gateway, request_id: str) -> dict[str, Any]:
    return gw.log(request_id, until=lambda r: r.get("status", 0) != 0)


def test_speech_streams_audio_as_the_mock_sends_it(gw: Gateway) -> None:
    up = f"tts-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "speech")
    _, key = gw.add_key()
    client = gw.openai(key)
    assert gw.mock is not None
    chunks = 6
    text = "héllo wörld, say this"
    with client.audio.speech.with_streaming_response.create(
        model=model, voice="alloy", input=text, response_format="wav",
        extra_headers={"x-mock-chunks": str(chunks), "x-mock-chunk-delay-ms": "150"},
    ) as resp:
        assert resp.headers["content-type"] == "audio/wav"
        it = resp.iter_bytes()
        got = next(it)
        assert got, "no first chunk"
        # The first bytes are here while the mock is still sending: the
        # response is streamed, not buffered whole.
        assert gw.mock.stats()["active"] >= 1
        for c in it:
            got += c
        request_id = resp.headers["x-llmgw-request-id"]
    want = b"".join(bytes([i % 251]) * SPEECH_CHUNK for i in range(chunks))
    assert got == want
    (rec,) = gw.mock.requests(up)
    assert json.loads(journal_body(rec))["model"] == up
    log = log_of(gw, request_id)
    assert log["characters"] == len(text)
    assert log["usage_source"] == "none"
    # The audio is not in the log: its size and content type are.
    assert log["response_body"] == f"[{len(want)} bytes of audio/wav, not logged]"


@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
def test_audio_uploads_reach_the_upstream_byte_for_byte(gw: Gateway, endpoint: str) -> None:
    up = f"whisper-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "transcription")
    _, key = gw.add_key()
    client, cap = client_capturing(gw, key)
    audio = wav_bytes(0.75)
    api = getattr(client.audio, endpoint)
    kw: dict[str, Any] = {"language": "en"} if endpoint == "transcriptions" else {}
    raw = api.with_raw_response.create(
        model=model, file=("speech.wav", audio, "audio/wav"), response_format="verbose_json",
        prompt="a test", **kw,
    )
    out = raw.parse()
    assert out.text.startswith("mock ")
    assert gw.mock is not None
    (rec,) = gw.mock.requests(up)
    assert rec["path"] == f"/v1/audio/{endpoint}"
    assert journal_body(rec) == with_model(cap.bodies[0], model, up)
    assert rec["headers"]["content-type"] == raw.http_response.request.headers["content-type"]
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    # What the upstream bills, its usage's whole seconds, over the
    # answer's exact duration (0.75 s).
    assert json.loads(raw.http_response.content)["usage"] == {"type": "duration", "seconds": 1}
    assert log["audio_milliseconds"] == 1000
    table = gw.cli_raw("logs", "get", log["id"], json_out=False)
    assert table.returncode == 0, table.stderr
    assert "audio seconds" in table.stdout and "1.000" in table.stdout, table.stdout
    assert log["provider"] == "mock" and log["upstream_model"] == up
    # The form's fields are logged; of the file only its name, type and size.
    form = json.loads(log["request_body"])
    assert form["model"] == model and form["prompt"] == "a test"
    assert form["file"] == {"filename": "speech.wav", "content_type": "audio/wav", "bytes": len(audio)}
    assert "RIFF" not in log["request_body"]

    # JSON and text answers pass through; a text answer has no quantities.
    text = api.create(model=model, file=("speech.wav", audio, "audio/wav"), response_format="text")
    assert isinstance(text, str) and text.startswith("mock ")
    plain = api.create(model=model, file=("speech.wav", audio, "audio/wav"))
    assert plain.text.startswith("mock ")


def test_a_model_after_the_file_with_a_quoted_boundary_chunked(gw: Gateway) -> None:
    """A hand-made form: a quoted boundary, a preamble, the file (larger
    than the tee's memory part) before the model, sent chunked in odd
    pieces: the request waits for the model, and the upstream gets every
    byte."""
    up = f"whisper-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "transcription")
    _, key = gw.add_key()
    boundary = "odd boundary:1"
    audio = wav_bytes(20.0)
    assert len(audio) > 256 * 1024

    def form(m: str) -> bytes:
        return (b"preamble to ignore\r\n"
                + f'--{boundary}  \r\ncontent-disposition: form-data; name=file; filename="x.wav"\r\n'
                  "content-type: audio/wav\r\n\r\n".encode()
                + audio
                + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{m}'
                  f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\n'
                  f"verbose_json\r\n--{boundary}--\r\nepilogue".encode())

    body = form(model)

    def pieces():
        for i in range(0, len(body), 9973):
            yield body[i:i + 9973]

    r = httpx.post(f"{gw.url}/v1/audio/transcriptions", content=pieces(), timeout=30,
                   headers={"authorization": f"Bearer {key}",
                            "content-type": f'multipart/form-data; boundary="{boundary}"'})
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == pytest.approx(20.0)
    assert gw.mock is not None
    (rec,) = gw.mock.requests(up)
    assert journal_body(rec) == form(up)
    # Chunked in, chunked out: no length was known.
    assert "content-length" not in rec["headers"], rec["headers"]


def gpt_4o_transcribe(gw: Gateway) -> tuple[str, str, openai.OpenAI]:
    """A gpt-4o-transcribe-like model (tokens, at 2.5 and 10 dollars per
    1M): its upstream name, its name, and a client with a key for it."""
    up = f"gpt-4o-transcribe-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "transcription",
                         "--price-input", "2.5", "--price-output", "10")
    _, key = gw.add_key()
    return up, model, gw.openai(key)


def test_gpt_4o_transcribe_tokens_are_usage_and_cost(gw: Gateway) -> None:
    _, model, client = gpt_4o_transcribe(gw)
    audio = wav_bytes(1.0)
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("a.wav", audio, "audio/wav"))
    usage = json.loads(raw.http_response.content)["usage"]
    assert usage["type"] == "tokens"
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["input_tokens"], log["output_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
    assert log["usage_source"] == "reported"
    want = (usage["input_tokens"] * 2.5 + usage["output_tokens"] * 10) / 1e6
    assert log["cost"] == pytest.approx(want)


def test_images_generate_and_edit(gw: Gateway) -> None:
    up = f"gpt-image-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "image", "--price-input", "5", "--price-output", "40")
    _, key = gw.add_key()
    client, cap = client_capturing(gw, key)
    raw = client.images.with_raw_response.generate(
        model=model, prompt="a small red square", n=2, size="1024x1024", quality="high")
    img = raw.parse()
    assert len(img.data) == 2
    assert base64.b64decode(img.data[0].b64_json) == png_bytes()
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["images"], log["image_size"], log["image_quality"]) == (2, "1024x1024", "high")
    assert (log["input_tokens"], log["output_tokens"]) == (4, 544)
    assert log["cost"] == pytest.approx((4 * 5 + 544 * 40) / 1e6)
    assert gw.mock is not None
    (gen,) = gw.mock.requests(up)
    assert json.loads(journal_body(gen))["model"] == up

    # An edit: a multipart upload with the image.
    raw = client.images.with_raw_response.edit(
        model=model, image=("in.png", png_bytes(), "image/png"), prompt="make it blue",
        size="512x512")
    assert len(raw.parse().data) == 1
    edit = gw.mock.requests(up)[1]
    assert edit["path"] == "/v1/images/edits"
    assert journal_body(edit) == with_model(cap.bodies[-1], model, up)
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["images"], log["image_size"], log["image_quality"]) == (1, "512x512", "")
    assert (log["input_tokens"], log["output_tokens"]) == (3 + 10, 272)
    form = json.loads(log["request_body"])
    assert form["image"]["filename"] == "in.png" and form["image"]["bytes"] == len(png_bytes())

    # A variation: no usage from a dall-e-2-like upstream; the count still.
    up2 = f"dall-e-2-{uid()}"
    model2 = gw.add_model([f"mock:{up2}"], "--type", "image")
    _, key2 = gw.add_key()
    raw = gw.openai(key2).images.with_raw_response.create_variation(
        model=model2, image=("in.png", png_bytes(), "image/png"), n=3)
    assert len(raw.parse().data) == 3
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["images"], log["usage_source"], log["input_tokens"]) == (3, "none", 0)


def failing_over(gw: Gateway) -> tuple[str, str, str, str]:
    """A transcription model whose first target answers 500 once, one
    attempt each: (first upstream, second upstream, model, key)."""
    a, b = f"fail-a-{uid()}", f"ok-b-{uid()}"
    model = gw.add_model([f"mock:{a}", f"mock:{b}"], "--type", "transcription",
                         "--max-attempts", "1")
    assert gw.mock is not None
    gw.mock.script(a, [{"status": 500}])
    _, key = gw.add_key()
    return a, b, model, key


def test_a_500_fails_over_with_the_whole_upload(gw: Gateway) -> None:
    a, b, model, key = failing_over(gw)
    assert gw.mock is not None
    client, cap = client_capturing(gw, key)
    # Larger than the tee's memory part: the replay reads its file too.
    audio = wav_bytes(40.0, rate=16000)
    assert len(audio) > 1 << 20
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("long.wav", audio, "audio/wav"), response_format="verbose_json")
    assert raw.parse().duration == pytest.approx(40.0)
    sent = cap.bodies[0]
    (first,) = gw.mock.requests(a)
    (second,) = gw.mock.requests(b)
    assert journal_body(first) == with_model(sent, model, a)
    assert journal_body(second) == with_model(sent, model, b)
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert [(x["upstream_model"], x["status"]) for x in log["attempts"]] == [(a, 500), (b, 200)]
    assert log["audio_milliseconds"] == 40_000


def test_wrong_type_protocol_and_body_get_400(gw: Gateway) -> None:
    speech = gw.add_model([f"mock:tts-{uid()}"], "--type", "speech")
    chat = gw.add_model([f"mock:chat-{uid()}"])
    on_anthropic = gw.add_model([f"mocka:whisper-{uid()}"], "--type", "transcription")
    _, key = gw.add_key()
    client = gw.openai(key)
    audio = wav_bytes(0.1)
    for model, words in [(speech, "type 'speech'"), (chat, "type 'chat'")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.audio.transcriptions.create(model=model, file=("a.wav", audio, "audio/wav"))
        assert words in e.value.message and "'transcription'" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=on_anthropic, file=("a.wav", audio, "audio/wav"))
    assert "anthropic" in e.value.message and "openai" in e.value.message, e.value.message
    # `route explain` says the same.
    x = gw.cli("route", "explain", on_anthropic, "--protocol", "transcription")
    assert x["type"] == "transcription" and "anthropic" in x["error"], x
    x = gw.cli("route", "explain", speech, "--protocol", "transcription")
    assert "models of type 'transcription'" in x["error"], x
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model=speech, prompt="x")
    assert "'image'" in e.value.message
    # A chat model's endpoint refuses a speech model too.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=speech, messages=[{"role": "user", "content": "x"}])
    # Not a multipart form, or one with no model.
    r = httpx.post(f"{gw.url}/v1/audio/transcriptions", json={"model": speech},
                   headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    r = httpx.post(f"{gw.url}/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                   headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 400 and "'model'" in r.json()["error"]["message"], r.text
    # No key: 401 before anything is read.
    r = httpx.post(f"{gw.url}/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
    assert r.status_code == 401


# ---------------------------------------------------------------------------
# The upload limit
# ---------------------------------------------------------------------------

LIMIT = 8 << 20


FIRST_BYTE_S = 1


@pytest.fixture(scope="module")
def ugw(make_gateway) -> Gateway:
    return make_gateway("uploads", dp_args=["--max-upload-bytes", str(LIMIT)],
                        cp_args=["--first-byte-timeout", f"{FIRST_BYTE_S}s"])


def test_a_slow_upload_is_not_cut_by_the_first_byte_timeout(ugw: Gateway) -> None:
    """The first-byte clock starts once the upload is in: a client that
    takes longer than the timeout to send it still gets its answer, from
    one attempt."""
    gw = ugw
    up = f"whisper-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "transcription")
    _, key = gw.add_key()
    boundary = "slow"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n').encode()
    audio = wav_bytes(1.0)
    tail = f"\r\n--{boundary}--\r\n".encode()

    def paced():
        # The pace is the point: the upload outlasts the first-byte timeout.
        yield head
        for i in range(4):
            time.sleep(FIRST_BYTE_S / 2)
            yield audio[i * len(audio) // 4:(i + 1) * len(audio) // 4]
        yield tail

    r = httpx.post(f"{gw.url}/v1/audio/transcriptions", content=paced(), timeout=30,
                   headers={"authorization": f"Bearer {key}",
                            "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    log = log_of(gw, r.headers["x-llmgw-request-id"])
    assert [(a["upstream_model"], a["status"]) for a in log["attempts"]] == [(up, 200)]
    assert log["latency_ms"] >= 2 * FIRST_BYTE_S * 1000 * 0.9
    assert gw.mock is not None
    (rec,) = gw.mock.requests(up)
    assert journal_body(rec) == head.replace(model.encode(), up.encode()) + audio + tail


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stream_upload(addr: str, key: str, model: str, total: int) -> tuple[int, dict[str, Any], int]:
    """Sends a chunked multipart upload of a `total`-byte file from a
    generator while reading the answer: (status, JSON body, bytes sent)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=60)
    boundary = "----llmgw-test-boundary"
    head = [
        "POST /v1/audio/transcriptions HTTP/1.1", f"Host: {addr}", "Transfer-Encoding: chunked",
        f"Authorization: Bearer {key}", f"Content-Type: multipart/form-data; boundary={boundary}",
    ]
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = [0]

    def chunks():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
               "Content-Type: audio/wav\r\n\r\n").encode()
        piece = b"\0" * (1 << 20)
        n = 0
        while n < total:
            yield piece
            n += len(piece)
        yield f"\r\n--{boundary}--\r\n".encode()

    def pump() -> None:
        try:
            for c in chunks():
                s.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
                sent[0] += len(c)
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # answered and closed: expected

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    data = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
            head_part, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head_part.lower():
                length = next(int(l.split(b":", 1)[1]) for l in head_part.split(b"\r\n")[1:]
                              if l.lower().startswith(b"content-length:"))
                if len(body) >= length:
                    break
    except OSError:
        pass
    s.close()
    t.join(timeout=60)
    head_part, _, body = data.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(body), sent[0]


def test_an_upload_over_the_limit_gets_413_with_memory_bounded(ugw: Gateway) -> None:
    gw = ugw
    up = f"whisper-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "transcription", "--max-attempts", "1")
    key_name, key = gw.add_key()
    assert gw.dp is not None
    # One upload under the limit first: the data plane's steady state.
    status, body, _ = stream_upload(gw.dp_addr, key, model, 4 << 20)
    assert status == 200, body
    before = rss_kib(gw.dp.pid)
    status, body, sent = stream_upload(gw.dp_addr, key, model, 200 << 20)
    after = rss_kib(gw.dp.pid)
    assert status == 413, body
    assert body["error"]["type"] == "invalid_request_error"
    assert str(LIMIT) in body["error"]["message"]
    # Answered at the limit, not after the whole upload.
    assert sent < 100 << 20, sent
    grown = (after - before) / 1024
    print(f"data plane RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB over a 200 MiB upload; "
          f"{sent / (1 << 20):.0f} MiB sent before the 413")
    assert grown < LIMIT / (1 << 20), f"the data plane grew by {grown:.1f} MiB"
    # A stated length over the limit: refused before a byte of the body.
    host, port = gw.dp_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {gw.dp_addr}\r\n"
                   f"Authorization: Bearer {key}\r\nContent-Length: {200 << 20}\r\n"
                   "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            c = s.recv(65536)
            if not c:
                break
            data += c
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    # The data plane still serves.
    wait_until(lambda: gw.readyz() is not None, 5, "the data plane to answer")
    # Each is logged: the upload under the limit answered, the two others
    # refused.
    logs = gw.key_logs(key_name, 3)
    assert sorted(r["status"] for r in logs) == [200, 413, 413]


def test_seconds_characters_and_images_are_priced_exactly(gw: Gateway) -> None:
    """Per-second, per-character and per-image prices (#16) give each
    record's exact cost in nano-dollars, beside reported tokens."""
    _, key = gw.add_key()
    client = gw.openai(key)

    # Speech: 15 dollars per 1M characters of input.
    tts = gw.add_model([f"mock:tts-{uid()}"], "--type", "speech", "--price-per-mchar", "15")
    text = "héllo wörld, say this"  # 21 characters, more bytes
    with client.audio.speech.with_streaming_response.create(
            model=tts, voice="alloy", input=text, response_format="wav") as resp:
        resp.read()
        rid = resp.headers["x-llmgw-request-id"]
    log = log_of(gw, rid)
    assert log["characters"] == 21
    assert int(log["cost_nanos"]) == 21 * 15_000  # 15e9 nano-dollars / 1e6 characters

    # Transcription: a tenth of a cent per second, on the billed seconds
    # (the upstream's usage of type duration: 2 s for 1.5 s of audio), and
    # a per-request price.
    whisper = gw.add_model([f"mock:whisper-{uid()}"], "--type", "transcription",
                           "--price-per-second", "0.001", "--price-per-request", "0.000000007")
    raw = client.audio.transcriptions.with_raw_response.create(
        model=whisper, file=("a.wav", wav_bytes(1.5), "audio/wav"), response_format="verbose_json")
    raw.parse()
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["audio_milliseconds"], log["audio_source"]) == (2000, "reported")
    assert int(log["cost_nanos"]) == 2_000_000 + 7

    # Images: by size and quality, else the size alone, else "*"; tokens
    # reported by the upstream are charged too.
    img = gw.add_model([f"mock:gpt-image-{uid()}"], "--type", "image",
                       "--price-per-image", "1024x1024/high=0.167",
                       "--price-per-image", "1024x1024=0.042",
                       "--price-per-image", "*=0.011",
                       "--price-input", "5", "--price-output", "40")
    costs = []
    for size, quality in [("1024x1024", "high"), ("1024x1024", "low"), ("512x512", "medium")]:
        raw = client.images.with_raw_response.generate(
            model=img, prompt="a red square", n=2, size=size, quality=quality)
        raw.parse()
        log = log_of(gw, raw.headers["x-llmgw-request-id"])
        tokens = log["input_tokens"] * 5_000 + log["output_tokens"] * 40_000
        costs.append(int(log["cost_nanos"]) - tokens)
    assert costs == [2 * 167_000_000, 2 * 42_000_000, 2 * 11_000_000]


def quiet_wav(seconds: float, rate: int) -> bytes:
    """A real mono 16-bit WAV file of silence (quick to make at any size)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * int(seconds * rate)))
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_a_text_answer_is_charged_the_measured_seconds(gw: Gateway, fmt: str) -> None:
    """A `text`, `srt` or `vtt` answer says no duration: with a per-second
    price the data plane measures the uploaded file (a WAV by its frames,
    an MP3 by its LAME header), exactly; the per-request price adds."""
    whisper = gw.add_model([f"mock:whisper-{uid()}"], "--type", "transcription",
                           "--price-per-second", "0.001", "--price-per-request", "0.000000007")
    _, key = gw.add_key()
    client = gw.openai(key)
    cases = [
        # 12,000 frames at 8 kHz: 1.5 s.
        (client.audio.transcriptions, ("a.wav", wav_bytes(1.5), "audio/wav"), 1500),
        # dataplane/testdata/tone.mp3: 16,000 samples at 16 kHz by LAME (its Info
        # tag states the frames, less the encoder's delay and padding): 1 s.
        (client.audio.translations, ("tone.mp3", (FIXTURES / "tone.mp3").read_bytes(), "audio/mpeg"),
         1000),
    ]
    for api, file, ms in cases:
        raw = api.with_raw_response.create(model=whisper, file=file, response_format=fmt)
        text = raw.parse()
        assert isinstance(text, str) and "mock " in text, text
        if fmt != "text":
            # The answer has the audio's cues, and no duration to read.
            assert "00:00:01" in text and "duration" not in text, text
        log = log_of(gw, raw.headers["x-llmgw-request-id"])
        assert (log["audio_milliseconds"], log["audio_source"]) == (ms, "measured"), log
        # 0.001 dollars a second: 1,000,000 nano-dollars, per millisecond 1,000.
        assert int(log["cost_nanos"]) == ms * 1000 + 7, log


def test_an_upload_that_cannot_be_measured_says_so(gw: Gateway) -> None:
    """Not a known audio format: no seconds, the per-second price not
    charged, the record says the duration is unknown, and the data plane
    warns; with no per-second price nothing is measured at all."""
    up = f"whisper-{uid()}"
    priced = gw.add_model([f"mock:{up}"], "--type", "transcription",
                          "--price-per-second", "0.001", "--price-per-request", "0.000000007")
    free = gw.add_model([f"mock:{up}"], "--type", "transcription")
    _, key = gw.add_key()
    client = gw.openai(key)
    start = gw.dp.line_count() if gw.dp is not None else 0
    raw = client.audio.transcriptions.with_raw_response.create(
        model=priced, file=("notes.wav", b"these are not audio bytes" * 50, "audio/wav"),
        response_format="text")
    raw.parse()
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["audio_milliseconds"], log["audio_source"]) == (0, "unknown"), log
    assert int(log["cost_nanos"]) == 7
    table = gw.cli_raw("logs", "get", log["id"], json_out=False)
    assert "unknown" in table.stdout, table.stdout
    assert gw.dp is not None
    gw.dp.wait_for(lambda line: ("could not be measured" in line and log["id"] in line) or None,
                   10, "the data plane's warning", start)
    raw = client.audio.transcriptions.with_raw_response.create(
        model=free, file=("a.wav", wav_bytes(0.5), "audio/wav"), response_format="srt")
    raw.parse()
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert (log["audio_milliseconds"], log["audio_source"], int(log["cost_nanos"])) == (0, "", 0)


def test_a_streamed_transcription_is_logged_as_a_stream(gw: Gateway) -> None:
    """`stream=true` is a form field: the record says stream, and the
    usage of the stream's last event is the record's."""
    up, model, client = gpt_4o_transcribe(gw)
    audio = wav_bytes(0.5)
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("a.wav", audio, "audio/wav"), stream=True)
    events = list(raw.parse())
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    usage = events[-1].usage
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    assert log["stream"] is True, log
    assert json.loads(log["request_body"])["stream"] == "true"
    assert (log["input_tokens"], log["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert int(log["cost_nanos"]) == usage.input_tokens * 2500 + usage.output_tokens * 10_000
    assert gw.mock is not None
    (rec,) = gw.mock.requests(up)
    assert rec["stream"] is True
    # Not streamed: not a stream.
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("a.wav", audio, "audio/wav"))
    raw.parse()
    assert log_of(gw, raw.headers["x-llmgw-request-id"])["stream"] is False


# ---------------------------------------------------------------------------
# The temporary files of all uploads
# ---------------------------------------------------------------------------

SPOOL = 1 << 20


@pytest.fixture(scope="module")
def sgw(make_gateway) -> Gateway:
    return make_gateway("spool", dp_args=["--max-upload-spool-bytes", str(SPOOL)])


def upload(gw: Gateway, key: str, model: str, size: int, **headers: str) -> httpx.Response:
    """A transcription upload of a `size`-byte file, with its length."""
    return httpx.post(f"{gw.url}/v1/audio/transcriptions", timeout=60,
                      headers={"authorization": f"Bearer {key}", **headers},
                      data={"model": model, "response_format": "json"},
                      files={"file": ("a.wav", quiet_wav(size / 16000, 8000), "audio/wav")})


def test_uploads_share_a_cap_on_temporary_files(sgw: Gateway) -> None:
    """Beyond its first 256 KiB an upload holds its share of
    --max-upload-spool-bytes until it ends: one that does not fit gets
    503 with Retry-After in OpenAI's shape, before its body is read (or
    as soon as it passes the cap), and the shares come back."""
    gw = sgw
    up = f"whisper-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "transcription", "--max-attempts", "1")
    key_name, key = gw.add_key()
    assert gw.mock is not None
    # The first holds 544 KiB of the 1 MiB while its slow upstream waits.
    first: list[httpx.Response] = []
    t = threading.Thread(target=lambda: first.append(
        upload(gw, key, model, 800 << 10, **{"x-mock-read-delay-ms": "1500"})))
    t.start()
    wait_until(lambda: gw.mock.stats()["active"] >= 1, 10, "the first upload upstream")
    second = upload(gw, key, model, 800 << 10)
    assert second.status_code == 503, second.text
    assert second.headers["retry-after"] == "1"
    err = second.json()["error"]
    assert (err["type"], err["code"]) == ("server_error", "upload_capacity_exhausted")
    assert "--max-upload-spool-bytes" in err["message"]
    t.join(30)
    assert first[0].status_code == 200, first[0].text
    # Its share is back: the same upload now fits.
    assert upload(gw, key, model, 800 << 10).status_code == 200
    # One without a length: refused once its file passes the cap, the rest
    # of it unread.
    status, body, sent = stream_upload(gw.dp_addr, key, model, 24 << 20)
    assert status == 503, body
    assert body["error"]["code"] == "upload_capacity_exhausted"
    assert sent < 24 << 20, sent
    # Each is logged: the refusals as refused, with their status.
    logs = gw.key_logs(key_name, 4)
    assert sorted(r["status"] for r in logs) == [200, 200, 503, 503]
    assert {r["outcome"] for r in logs if r["status"] == 503} == {"refused"}


# ---------------------------------------------------------------------------
# The first-byte timeout of an upload's attempt
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fgw(make_gateway) -> Gateway:
    return make_gateway("firstbyte", cp_args=["--first-byte-timeout", f"{FIRST_BYTE_S}s"])


def test_a_failover_resending_a_large_upload_is_not_cut_by_the_first_byte_timeout(
        fgw: Gateway) -> None:
    """The first-byte clock of an upload's attempt starts when its body
    has all been sent: a failover that resends 20 MiB to an upstream that
    takes 2 s to start reading (longer than the 1 s timeout; the upload
    is larger than the socket buffers) gets its answer."""
    gw = fgw
    a, b, model, key = failing_over(gw)
    assert gw.mock is not None
    client = gw.openai(key, max_retries=0)
    audio = quiet_wav(655.36, 16000)  # 20 MiB
    assert len(audio) > 20 << 20
    delay_ms = 2000
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("long.wav", audio, "audio/wav"), response_format="verbose_json",
        extra_headers={"x-mock-read-delay-ms": str(delay_ms)})
    assert raw.parse().duration == pytest.approx(655.36)
    log = log_of(gw, raw.headers["x-llmgw-request-id"])
    attempts = log["attempts"]
    assert [(x["upstream_model"], x["status"]) for x in attempts] == [(a, 500), (b, 200)], attempts
    # The second attempt took longer than the first-byte timeout: the
    # clock waited for its body.
    assert attempts[1]["latency_ms"] >= delay_ms * 0.9 > FIRST_BYTE_S * 1000, attempts
    assert len(journal_body(gw.mock.requests(b)[0])) > 20 << 20


def test_an_upstream_that_takes_none_of_an_upload_ends_the_attempt(fgw: Gateway) -> None:
    """While an upload is being sent, the first-byte clock waits, but an
    upstream that takes none of it for the provider's idle timeout (1 s
    here) ends the attempt: not the request's deadline."""
    gw = fgw
    provider = gw.add_provider("openai", None, None, "--timeout-s", "1")
    up = f"stuck-{uid()}"
    model = gw.add_model([f"{provider}:{up}"], "--type", "transcription", "--max-attempts", "1")
    _, key = gw.add_key()
    client = gw.openai(key, max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as e:
        client.audio.transcriptions.create(
            model=model, file=("long.wav", quiet_wav(655.36, 16000), "audio/wav"),
            extra_headers={"x-mock-read-delay-ms": "6000"})
    assert e.value.status_code == 504
    assert "took none of the upload" in e.value.message, e.value.message
    assert time.monotonic() - started < 5
    log = log_of(gw, e.value.response.headers["x-llmgw-request-id"])
    assert log["outcome"] == "timeout"
    assert [a["error"] for a in log["attempts"]] == [
        "the upstream took none of the upload for the idle timeout"]
