"""``manage.py screenshot PNG``: an admin page of the shop, logged in as ``admin``, in Chromium.

    python example_project/manage.py demo
    python example_project/manage.py screenshot docs/images/admin-award-log.png

How README's screenshot is made. Nothing beyond Django and the standard library: the shop is
served in this process, the ``admin`` user's session is written straight to the session store, and
headless Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``),
which needs no websocket client. Needs Debian's ``chromium`` package (or ``--chromium PATH``).
"""

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
)
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.core.wsgi import get_wsgi_application

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def serve():
    """The shop on a free loopback port, static files included, as runserver would serve it.

    Without the navigation sidebar, which would squeeze the award log's columns.
    """
    application = StaticFilesHandler(get_wsgi_application())  # this sets logging up anew
    logging.getLogger("django.request").setLevel(logging.ERROR)  # Chromium asks for a favicon
    admin.site.enable_nav_sidebar = False
    server = WSGIServer(("127.0.0.1", 0), QuietHandler)
    server.set_app(application)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def admin_session():
    user = get_user_model()._default_manager.filter(username="admin").first()
    if user is None:
        raise CommandError("No user admin: run manage.py demo first.")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session


class DevTools:
    """Chromium's DevTools protocol over the pipe: NUL-terminated JSON, fd 3 in, fd 4 out."""

    def __init__(self, chromium, profile, width, height):
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()

        def wire_pipes():
            # Lift both ends above 4 first, so neither is overwritten by the other's dup2.
            reading = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            writing = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.process = subprocess.Popen(  # noqa: S603 - a browser binary the user chose
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_pipes,
            close_fds=False,  # only 3 and 4 are inheritable: Python opens everything else CLOEXEC
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.size = (width, height)
        self.buffer = b""
        self.next_id = 0

    def send(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def receive(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe.")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_for(self, event, session):
        while True:
            message = self.receive()
            if message.get("method") == event and message.get("sessionId") == session:
                return

    def screenshot(self, url, cookie):
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        width, height = self.size
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Network.setCookie", session, url=url, **cookie)
        self.send("Page.enable", session)
        self.send("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)
        data = self.send("Page.captureScreenshot", session, format="png")["data"]
        return base64.b64decode(data)

    def close(self):
        with contextlib.suppress(RuntimeError):  # it may be gone already
            self.send("Browser.close")
        self.process.wait(timeout=30)


class Command(BaseCommand):
    help = "Save a PNG of an admin page of the shop, logged in as admin, with headless Chromium."

    def add_arguments(self, parser):
        parser.add_argument("output", type=Path)
        parser.add_argument("--path", default="/admin/django_zinrelo/award/")
        parser.add_argument("--size", default="1440x800", help="WIDTHxHEIGHT in CSS pixels.")
        parser.add_argument("--chromium", default=shutil.which("chromium"))

    def handle(self, *args, output, path, size, chromium, **options):
        if not chromium:
            raise CommandError("No Chromium found: apt-get install chromium, or --chromium PATH.")
        width, height = (int(n) for n in size.split("x"))
        server = serve()
        host, port = server.server_address[:2]
        session = admin_session()
        cookie = {"name": settings.SESSION_COOKIE_NAME, "value": session.session_key}
        try:
            with tempfile.TemporaryDirectory() as profile:
                browser = DevTools(chromium, profile, width, height)
                try:
                    image = browser.screenshot(f"http://{host}:{port}{path}", cookie)
                finally:
                    browser.close()
        finally:
            session.delete()
            server.shutdown()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(image)
        self.stdout.write(f"Wrote {output} ({len(image) // 1024} KB)")
