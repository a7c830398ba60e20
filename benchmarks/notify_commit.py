"""Why an idle worker polls the intake instead of waiting for LISTEN/NOTIFY.

Runs N client threads against PostgreSQL, each doing ``INSERT`` + ``COMMIT``
of one small row in a loop (what a signup does), first plain and then with
``NOTIFY`` in the same transaction (what waking a listener on every signup
would cost). Prints commits per second of both and their ratio. PostgreSQL
queues the commits of notifying transactions behind one lock, so the ratio
shows what the notification would take from the signup's floor.

    .venv/bin/python benchmarks/notify_commit.py [--threads 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import threading
import time

import psycopg

URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def run(threads: int, seconds: float, notify: bool) -> float:
    """Commits per second over ``seconds`` with ``threads`` connections."""
    counts = [0] * threads
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)

    def work(number: int) -> None:
        with psycopg.connect(URL) as conn:
            barrier.wait()
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("INSERT INTO notify_bench (body) VALUES (%s)", ("x" * 200,))
                    if notify:
                        conn.execute("NOTIFY notify_bench")
                counts[number] += 1

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.monotonic() - start)


def main() -> None:
    """Measure both and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS notify_bench")
        conn.execute("CREATE TABLE notify_bench (id bigserial PRIMARY KEY, body text)")
    try:
        plain = run(args.threads, args.seconds, notify=False)
        notified = run(args.threads, args.seconds, notify=True)
    finally:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS notify_bench")
    print(f"threads {args.threads}, {args.seconds:.0f} s each")
    print(f"INSERT + COMMIT:          {plain:8.0f} commits/s")
    print(f"INSERT + NOTIFY + COMMIT: {notified:8.0f} commits/s ({notified / plain:.0%} of plain)")


if __name__ == "__main__":
    main()
