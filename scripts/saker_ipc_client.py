#!/usr/bin/env python3
"""A small client for saker's backend socket (`saker serve --ipc unix:PATH` or `--ipc stdio`),
for a serving frontend to copy. Standard library only. Protocol: docs/ipc.md.

    client = SakerIpc.connect_unix("/tmp/saker.sock")      # or SakerIpc(reader, writer)
    print(client.health())                                  # {"health": "ready", "ok": True}
    for msg in client.generate("r1", "Hello", {"max_new_tokens": 8}, stream=True):
        print(msg.get("token", {}).get("text", ""), end="")
    client.cancel("r2")
"""
import json
import queue
import socket
import threading


class SakerIpcError(RuntimeError):
    def __init__(self, message, code):
        super().__init__(f"{code}: {message}")
        self.code = code


class SakerIpc:
    def __init__(self, reader, writer):
        """reader / writer: binary file objects (a socket's makefile, or a process's pipes)."""
        self._reader, self._writer = reader, writer
        self._lock = threading.Lock()
        self._queues = {}            # request id -> queue of its messages
        self._general = queue.Queue()  # messages without an id: health answers, protocol errors
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    @classmethod
    def connect_unix(cls, path, timeout=None):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        s.settimeout(None)
        client = cls(s.makefile("rb"), s.makefile("wb"))
        client._socket = s
        return client

    def close(self):
        try:
            self._writer.close()
        finally:
            if hasattr(self, "_socket"):
                # shutdown, not just close: the reader's makefile keeps the descriptor open, and
                # the connection (with saker's slot for it) would outlive this client.
                try:
                    self._socket.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._socket.close()

    def send(self, message):
        """Sends one message (a dict, or raw text for testing malformed input)."""
        line = message if isinstance(message, str) else json.dumps(message)
        with self._lock:
            self._writer.write(line.encode() + b"\n")
            self._writer.flush()

    def _read_loop(self):
        for raw in self._reader:
            if not raw.strip():
                continue
            msg = json.loads(raw)
            q = self._queues.get(json.dumps(msg["id"])) if "id" in msg else None
            (q if q is not None else self._general).put(msg)
        self._general.put(None)  # the connection closed
        for q in list(self._queues.values()):
            q.put(None)

    def next_general(self, timeout=30):
        return self._general.get(timeout=timeout)

    def health(self, timeout=30):
        self.send({"health": True})
        while True:
            msg = self.next_general(timeout)
            if msg is None or "health" in msg:
                return msg

    def generate(self, request_id, inputs, parameters=None, stream=False, timeout=120):
        """Yields the request's messages: one per token when streaming, the last with
        `generated_text` and `details`. Raises SakerIpcError on an error message."""
        key = json.dumps(request_id)
        q = self._queues[key] = queue.Queue()
        try:
            self.send({"id": request_id, "inputs": inputs, "parameters": parameters or {}, "stream": stream})
            while True:
                msg = q.get(timeout=timeout)
                if msg is None:
                    raise SakerIpcError("the connection closed", 0)
                if "error" in msg:
                    raise SakerIpcError(msg["error"], msg.get("code", 0))
                yield msg
                if "generated_text" in msg:
                    return
        finally:
            self._queues.pop(key, None)

    def cancel(self, request_id):
        self.send({"cancel": request_id})
