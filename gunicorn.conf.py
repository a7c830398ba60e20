"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py wsgi:app`.

Every value can be overridden from the environment (GUNICORN_* below) or on
the command line. See docs/deploy.md.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Requests are short and mostly wait on PostgreSQL: (2 x cores) + 1 sync workers.
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
# "gthread" with a few threads lets a worker overlap requests that wait on
# PostgreSQL; "sync" is one request at a time.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", 1))
# Nothing the app does in a request takes long (mail goes through the outbox);
# a request still running after 30 s is stuck and its worker is replaced.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, so a slow leak can never grow without bound.
max_requests = 10_000
max_requests_jitter = 1_000
# The TLS-terminating proxy in front sets X-Forwarded-*; trust only it. The app
# applies them itself through TRUSTED_PROXIES (ProxyFix), so gunicorn need not.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Logs go to stderr for the service manager; the access log's paths pass through
# the app's token redaction (newsletter.web.RedactTokens on gunicorn.access).
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
# Loading the app before forking saves memory and makes a bad setting fail
# once, at start-up, with its message.
preload_app = True
