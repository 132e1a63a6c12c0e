#!/usr/bin/python3
"""An XMPP user for tests/xmpp/prosody.sh, on slixmpp and its XEP-0363 plugin.

Usage: client.py --jid JID --password PW --port PORT --dir DIR [--to JID]... STEP...
Logs in over plaintext c2s on 127.0.0.1:PORT, writes DIR/ready once its presence is out, then
runs the steps in order and exits 0 (1 on any error or after 60 s):
  put:FILE[:CONTENT-TYPE]  request a slot from the domain's upload service (found with
                           disco#items and disco#info), PUT FILE through the plugin, send the GET
                           URL (body and jabber:x:oob) to every --to; appends "FILE URL PUT-URL" to
                           DIR/sent
  recv:N                   wait for N messages (also those that came before this step), GET each
                           message's URL and save it as DIR/got.K (K from 1); appends
                           "K FROM URL" to DIR/received
The plugin's own service discovery is not used: in Debian's slixmpp 1.8.3 on Python 3.11 it
fails ("Passing coroutines is forbidden"), so the lookup is done here and the plugin's
upload_service and max_file_size are set from it, as a client would.
"""
import argparse
import asyncio
import os
import sys
import urllib.request

import slixmpp

UPLOAD_NS = "urn:xmpp:http:upload:0"


class User(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.inbox = asyncio.Queue()
        self.got = 0
        self.rc = 1
        for p in ("xep_0030", "xep_0066", "xep_0363"):
            self.register_plugin(p)
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.message)
        self.add_event_handler("failed_auth", lambda _: self.fail("authentication failed"))

    def fail(self, why):
        print(f"client.py {self.args.jid}: {why}", file=sys.stderr)
        self.disconnect()

    def message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.inbox.put_nowait(msg)

    async def find_upload_service(self):
        items = await self.plugin["xep_0030"].get_items(jid=self.boundjid.domain, timeout=10)
        for item in items["disco_items"]["items"]:
            info = await self.plugin["xep_0030"].get_info(jid=item[0], timeout=10)
            if UPLOAD_NS not in info["disco_info"]["features"]:
                continue
            up = self.plugin["xep_0363"]
            up.upload_service = info["from"]
            for form in info["disco_info"].iterables:
                values = form["values"]
                if values.get("FORM_TYPE") == [UPLOAD_NS]:
                    up.max_file_size = int(values["max-file-size"])
            return
        raise RuntimeError(f"no {UPLOAD_NS} service on {self.boundjid.domain}")

    async def put(self, spec):
        path, _, ctype = spec.partition(":")
        if self.plugin["xep_0363"].upload_service is None:
            await self.find_upload_service()
        up = self.plugin["xep_0363"]
        slots = []
        request_slot = up.request_slot

        async def keep_slot(*a, **kw):  # the PUT URL, to see which protocol the module signed
            iq = await request_slot(*a, **kw)
            slots.append(iq["http_upload_slot"]["put"]["url"])
            return iq

        up.request_slot = keep_slot
        try:
            url = await up.upload_file(path, content_type=ctype or None, timeout=60)
        finally:
            up.request_slot = request_slot
        for to in self.args.to:
            m = self.make_message(mto=to, mbody=url, mtype="chat")
            m["oob"]["url"] = url
            m.send()
        with open(os.path.join(self.args.dir, "sent"), "a") as f:
            f.write(f"{path} {url} {slots[0]}\n")

    async def recv(self, n):
        for _ in range(n):
            msg = await self.inbox.get()
            url = msg["oob"]["url"] or msg["body"]
            self.got += 1
            out = os.path.join(self.args.dir, f"got.{self.got}")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, download, url, out)
            with open(os.path.join(self.args.dir, "received"), "a") as f:
                f.write(f"{self.got} {msg['from'].bare} {url}\n")

    async def start(self, _):
        try:
            self.send_presence()
            await self.get_roster(timeout=10)
            with open(os.path.join(self.args.dir, "ready"), "w") as f:
                f.write("ready\n")
            for step in self.args.steps:
                verb, _, arg = step.partition(":")
                if verb == "put":
                    await self.put(arg)
                elif verb == "recv":
                    await self.recv(int(arg))
                else:
                    raise ValueError(f"unknown step {step}")
            self.rc = 0
        except Exception as e:  # noqa: BLE001 -- any failure is the test's, said on stderr
            print(f"client.py {self.args.jid}: {type(e).__name__}: {e}", file=sys.stderr)
        self.disconnect()


def download(url, out):
    with urllib.request.urlopen(url, timeout=60) as r, open(out, "wb") as f:
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--to", action="append", default=[])
    ap.add_argument("steps", nargs="*")
    args = ap.parse_args()
    user = User(args)
    user.connect(("127.0.0.1", args.port), force_starttls=False, disable_starttls=True)
    loop = asyncio.get_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(user.disconnected, 60))
    except asyncio.TimeoutError:
        print(f"client.py {args.jid}: timed out", file=sys.stderr)
        return 1
    return user.rc


if __name__ == "__main__":
    sys.exit(main())
