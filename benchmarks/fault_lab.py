"""The lab of benchmarks/send_faults.py: simulated hosts, a private PostgreSQL, an SMTP sink.

- ``Host``: a network namespace joined to the root namespace by a veth pair on
  a private /30 (10.231.X.0/30); the root side gets .1, the namespace .2. A
  host's PostgreSQL link is cut with an iptables DROP inside its namespace
  (outgoing TCP to port 5432 only, so SMTP still goes through).
- ``start_postgres``: a throw-away PostgreSQL cluster (the installed server's
  binaries, initdb into a temporary folder) listening on the root side's veth
  addresses. The shared server is not touched: its listen_addresses can only
  change with a restart, which would cut every other session on the machine.
- ``Sink``: aiosmtpd on the root side's veth addresses, in a thread; it counts
  each recipient, each session's messages, and calls hooks a fault uses.
- ``Fault``: those hooks; a kill fires inside the sink's hook, before the
  message that triggered it is answered.

Every step registers its undo on an ExitStack, so closing the stack (also on
an exception or a signal turned into SystemExit) removes what was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGGED = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
PG_PORT = 5432
SINK_PORT = 2525


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; raise with its stderr when it fails and ``check`` is set."""
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done


@dataclass
class Host:
    """A simulated host: its namespace, veth ends and the two addresses of its /30."""

    ns: str
    root_if: str
    root_addr: str
    ns_addr: str

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return ["ip", "netns", "exec", self.ns]

    def _drop_rule(self, action: str) -> None:
        sh(
            *self.exec_prefix(),
            "iptables",
            action,
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            self.root_addr,
            "--dport",
            str(PG_PORT),
            "-j",
            "DROP",
        )

    def cut_postgres(self) -> None:
        """Drop every packet from this host to PostgreSQL (no RST, no ICMP: a partition)."""
        self._drop_rule("-A")

    def heal_postgres(self) -> None:
        """Remove the DROP rule again."""
        self._drop_rule("-D")


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /30s of 10.231.0.0/16 that no interface of the root namespace uses."""
    used = sh("ip", "-4", "-o", "addr").stdout
    nets = []
    for third in range(1, 255):
        net = ipaddress.IPv4Network(f"10.231.{third}.0/30")
        if f" {net[1]}/" not in used:
            nets.append(net)
        if len(nets) == count:
            return nets
    raise RuntimeError("no free /30 in 10.231.0.0/16")


def make_hosts(stack: contextlib.ExitStack, count: int, tag: str) -> list[Host]:
    """``count`` namespaces with a veth each; their removal (which also removes
    the veths and the namespaces' firewall rules) is registered on ``stack``."""
    if shutil.which("iptables") is None:
        raise RuntimeError("iptables is missing (apt-get install iptables)")
    hosts = []
    for index, net in enumerate(free_subnets(count)):
        host = Host(f"nlf{tag}h{index}", f"nlf{tag}r{index}", str(net[1]), str(net[2]))
        inner = f"nlf{tag}n{index}"
        sh("ip", "netns", "add", host.ns)
        stack.callback(sh, "ip", "netns", "del", host.ns, check=False)
        stack.callback(sh, "ip", "link", "del", host.root_if, check=False)  # if still in root
        sh("ip", "link", "add", host.root_if, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", host.ns)
        sh("ip", "addr", "add", f"{host.root_addr}/30", "dev", host.root_if)
        sh("ip", "link", "set", host.root_if, "up")
        for args in (
            ["addr", "add", f"{host.ns_addr}/30", "dev", inner],
            ["link", "set", inner, "up"],
            ["link", "set", "lo", "up"],
        ):
            sh(*host.exec_prefix(), "ip", *args)
        hosts.append(host)
    return hosts


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parts[-3])
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


def start_postgres(stack: contextlib.ExitStack, folder: Path, addresses: list[str]) -> str:
    """initdb a cluster in ``folder`` and start it on ``addresses`` (trust from
    10.231.0.0/16 and the socket only); stop it on ``stack``. Returns the admin URL."""
    bindir = postgres_bindir()
    folder.mkdir()
    shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"

    def as_postgres(*command: str) -> None:
        sh("runuser", "-u", "postgres", "--", *command)

    as_postgres(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale",
        "C.UTF-8",
        "--no-sync",
    )
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all postgres 10.231.0.0/16 trust\n")
    options = (
        f"-c listen_addresses={','.join(addresses)} -c port={PG_PORT} "
        f"-c unix_socket_directories={folder} -c shared_buffers=128MB"
    )
    stack.callback(
        sh,
        "runuser",
        "-u",
        "postgres",
        "--",
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-m",
        "immediate",
        "-w",
        "stop",
        check=False,
    )
    as_postgres(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "server.log"),
        "-w",
        "-o",
        options,
        "start",
    )
    return f"postgresql+psycopg://postgres@/postgres?host={folder}&port={PG_PORT}"


class Sink:
    """An SMTP server on the given addresses that accepts everything and counts
    each recipient. ``on_mail(peer, session_messages)`` runs at each MAIL FROM
    and ``on_data(peer, session_messages)`` after a message is counted and
    before it is answered; ``delay`` seconds of sleep per message."""

    def __init__(self, addresses: list[str], delay: float = 0.0) -> None:
        self.addresses = addresses
        self.delay = delay
        self.lock = threading.Lock()
        self.reset()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def reset(self) -> None:
        """Forget counts and hooks (a new run)."""
        with getattr(self, "lock", threading.Lock()):
            self.counts: Counter[str] = Counter()
            self.total = 0
            self.last_at = time.monotonic()
            self.on_mail: Callable[[str, int], None] | None = None
            self.on_data: Callable[[str, int], None] | None = None

    def start(self, stack: contextlib.ExitStack) -> None:
        """Serve in a thread until ``stack`` closes."""
        self.thread.start()
        if not self.ready.wait(15) or self.error is not None:
            raise RuntimeError(f"the SMTP sink did not start: {self.error}")
        stack.callback(self.stop)

    def stop(self) -> None:
        """Stop the event loop and wait for the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _serve(self) -> None:
        from aiosmtpd.smtp import SMTP

        asyncio.set_event_loop(self.loop)
        try:
            server = self.loop.run_until_complete(
                self.loop.create_server(
                    lambda: SMTP(self, hostname="sink", loop=self.loop),
                    host=self.addresses,
                    port=SINK_PORT,
                )
            )
        except BaseException as exc:  # reported by start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            self.loop.close()

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        """Accept the sender; run ``on_mail`` (a fault may kill the worker here)."""
        if self.on_mail is not None:
            self.on_mail(session.peer[0], getattr(session, "messages", 0))
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Count the message for each recipient; run ``on_data``; then answer."""
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.counts.update(address.lower() for address in envelope.rcpt_tos)
            self.total += len(envelope.rcpt_tos)
            self.last_at = time.monotonic()
        session.messages = getattr(session, "messages", 0) + 1
        if self.on_data is not None:
            self.on_data(session.peer[0], session.messages)
        return "250 OK"


class Fault:
    """The fault of one run, fired from the sink's hooks at one third of the campaign."""

    def __init__(
        self,
        kind: str,
        victim: subprocess.Popen[bytes],
        host: Host,
        at: int,
        batch: int,
        sink: Sink,
    ) -> None:
        self.kind, self.victim, self.host, self.at, self.batch = kind, victim, host, at, batch
        self.sink = sink
        self.fired_at: float | None = None  # time.monotonic()
        sink.on_mail, sink.on_data = self.on_mail, self.on_data

    def _fire(self) -> None:
        self.fired_at = time.monotonic()
        if self.kind.startswith("kill"):
            os.kill(self.victim.pid, signal.SIGKILL)

    def on_mail(self, peer: str, messages: int) -> None:
        """kill-between: the victim begins a new session (its last batch is recorded)."""
        if (
            self.kind == "kill-between"
            and self.fired_at is None
            and peer == self.host.ns_addr
            and messages == 0
            and self.sink.total >= self.at
        ):
            self._fire()

    def on_data(self, peer: str, messages: int) -> None:
        """kill-mid: the victim's session has delivered half a batch; partition: a third sent."""
        if self.fired_at is not None or self.sink.total < self.at:
            return
        if self.kind == "partition" or (
            self.kind == "kill-mid" and peer == self.host.ns_addr and messages == self.batch // 2
        ):
            self._fire()


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (the batch in flight finishes), SIGKILL after 5 s."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def new_log_line(log: Path, offset: int) -> bool:
    """Whether the log has a warning, error or traceback after ``offset``."""
    with log.open("rb") as handle:
        handle.seek(offset)
        return bool(LOGGED.search(handle.read().decode(errors="replace")))
