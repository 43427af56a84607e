"""False positives of the default redactor on realistic log records that hold no secret.

Generates N records like the users' guide's JsonFormatter writes (timestamp,
level, logger, message, module, function, line, thread, thread_name, process)
with the extras its examples log: order and user ids, durations, request paths
with query strings, UUID trace ids, IP addresses, amounts, SQL, user agents,
error messages and stack traces. None holds a secret, so every redaction is a
false positive. Runs the default redactor (the default secret keys and every
built-in detector, all ``mask``) on each record and reports how many it changed,
by which detector or key, and what it cost per record.

``--decimal-trace-ids`` adds Datadog-style ``dd.trace_id``/``dd.span_id`` (random
64-bit integers written in decimal) to every record.

    .venv/bin/python bench/redact_false_positives.py --records 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sizes import parse_sized

from shipper.transform.redact.detectors import BUILTIN_DETECTORS
from shipper.transform.redact.redactor import Redactor
from shipper.transform.redact.secret_keys import DEFAULT_SECRET_KEYS

#: What one event adds: (level, logger, module, function, message, extras).
Event = tuple[str, str, str, str, str, dict[str, Any]]

PATHS = [
    "/api/v1/orders?page={n}&limit=50&sort=-created_at&status=pending",
    "/api/v1/orders/ORD-2024-{id:06d}?include=items&expand=customer",
    "/api/v1/search?q=wireless+headphones&category=electronics&min_price=50&max_price=200",
    "/api/v1/users/{id}/orders?from=2024-01-01&to=2024-01-31",
    "/api/v1/users/{id}/preferences?fields=theme,locale,timezone",
    "/api/v2/accounts/{id}/contacts?limit=25&offset={n}",
    "/oauth/authorize?response_type=code&client_id=web-app"
    "&redirect_uri=https%3A%2F%2Fshop.example.com%2Fcallback&scope=openid+profile&state={hex}",
    "/api/v1/orders/{uuid}/items?expand=product",
    "/healthz",
    "/metrics",
    "/static/js/main.{hex}.js",
]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "python-requests/2.31.0",
    "curl/8.4.0",
    "okhttp/4.12.0",
    "kube-probe/1.28",
    "grpc-python/1.60.0 grpc-c/37.0.0 (linux; chttp2)",
]
SQL = [
    "SELECT * FROM users WHERE active = ?",
    "SELECT id, email, password_hash, created_at FROM users WHERE id = %(id)s",
    "UPDATE users SET password_hash = %(password_hash)s, updated_at = now() WHERE id = %(id)s",
    "SELECT o.id, o.total, o.status FROM orders o JOIN customers c ON c.id = o.customer_id "
    "WHERE o.created_at > '2024-01-01' AND o.status IN ('pending', 'paid') LIMIT 100",
    "INSERT INTO order_items (order_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4)",
    "DELETE FROM sessions WHERE expires_at < now() - interval '7 days'",
    "SELECT count(*) FROM events WHERE tenant_id = $1 AND ts BETWEEN $2 AND $3",
]
TRACEBACKS = [
    'Traceback (most recent call last):\n  File "/app/src/orders/service.py", line 142, '
    "in create_order\n    result = self.payments.charge(order.total, order.payment_method)\n"
    '  File "/app/src/payments/client.py", line 88, in charge\n'
    "    response = self.session.post(url, json=payload, timeout=30)\n"
    '  File "/usr/local/lib/python3.11/site-packages/requests/sessions.py", line 637, in post\n'
    '    return self.request("POST", url, data=data, json=json, **kwargs)\n'
    "requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='api.stripe.com', port=443): "
    "Read timed out. (read timeout=30)",
    'Traceback (most recent call last):\n  File "/app/src/auth/tokens.py", line 57, '
    'in decode_token\n    payload = jwt.decode(token, key, algorithms=["HS256"])\n'
    '  File "/usr/local/lib/python3.11/site-packages/jwt/api_jwt.py", line 210, in decode\n'
    "    decoded = self.decode_complete(jwt, key, algorithms, options, **kwargs)\n"
    "jwt.exceptions.ExpiredSignatureError: Signature has expired",
    'Traceback (most recent call last):\n  File "/app/src/db/pool.py", line 31, in connect\n'
    "    conn = psycopg2.connect(dsn, connect_timeout=5)\n"
    "psycopg2.OperationalError: could not connect to server: Connection refused\n"
    '\tIs the server running on host "db.internal" (10.0.3.12) and accepting\n'
    "\tTCP/IP connections on port 5432?",
    'Traceback (most recent call last):\n  File "/app/src/imports/csv_loader.py", line 77, '
    "in load_row\n    quantity = int(row[3])\n"
    "ValueError: invalid literal for int() with base 10: 'N/A'",
    'Traceback (most recent call last):\n  File "/app/src/orders/repository.py", line 64, '
    "in insert\n    session.flush()\nsqlalchemy.exc.IntegrityError: "
    "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
    '"orders_pkey"\nDETAIL:  Key (id)=(184467) already exists.',
    'Traceback (most recent call last):\n  File "/app/src/agents/orchestrator.py", line 201, '
    "in handle_request\n    context = self.memory[user_id]\nKeyError: 'user789'",
]
ERRORS = [
    "Service temporarily unavailable",
    "Connection timeout",
    "Read timed out. (read timeout=30)",
    "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    "429 Too Many Requests: retry after 30s",
    "SSL: CERTIFICATE_VERIFY_FAILED certificate verify failed: unable to get local issuer",
]
LOGGERS = {
    "orchestrator": ("multi_agent.orchestrator", "orchestrator", "handle_request"),
    "orders": ("app.orders", "service", "create_order"),
    "payments": ("app.payments", "client", "charge"),
    "http": ("uvicorn.access", "httptools_impl", "send"),
    "sql": ("sqlalchemy.engine", "base", "_execute_context"),
    "auth": ("app.auth", "login", "authenticate"),
    "cache": ("app.cache", "redis_cache", "get"),
    "api": ("app.integrations", "salesforce", "request"),
    "jobs": ("app.jobs", "worker", "run_job"),
    "system": ("app.system", "monitor", "check"),
}
COMPONENTS = ["database", "redis", "salesforce", "payment_gateway", "email_service"]


class Events:
    """Seed-style events: the users' guide's examples, with realistic values."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def order_id(self) -> str:
        return f"ORD-2024-{self.rng.randrange(1, 999_999):06d}"

    def user_id(self) -> str:
        return self.rng.choice([f"user{self.rng.randrange(1000)}", str(self.rng.randrange(10**5))])

    def ip(self) -> str:
        r = self.rng
        if r.random() < 0.5:
            return f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"
        return f"{r.randrange(1, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def path(self) -> str:
        r = self.rng
        template = r.choice(PATHS)
        return template.format(
            n=r.randrange(1, 40), id=r.randrange(1, 99_999), hex=self.hex(16), uuid=self.uuid()
        )

    def hex(self, chars: int) -> str:
        return f"{self.rng.getrandbits(chars * 4):0{chars}x}"

    def amount(self) -> float:
        return round(self.rng.uniform(1, 2_000), 2)

    def all(self) -> list[tuple[int, Callable[[], Event]]]:
        """Every event with its weight."""
        return [
            (10, self.http_access),
            (6, self.user_logged_in),
            (6, self.order_placed),
            (5, self.processing_order),
            (3, self.payment_failed),
            (5, self.api_call),
            (6, self.sql_query),
            (2, self.slow_query),
            (6, self.cache_lookup),
            (2, self.circuit_breaker),
            (2, self.job_completed),
            (3, self.feature_flag),
            (2, self.failed_login),
            (1, self.memory_high),
            (2, self.external_error),
            (1, self.validation_failed),
            (2, self.operation_failed),
            (1, self.connection_lost),
            (3, self.agent_delegated),
            (2, self.llm_call),
            (1, self.server_started),
            (1, self.deprecated),
            (2, self.batch_completed),
            (2, self.permission_check),
            (1, self.token_refreshed),
            (1, self.health_check_failed),
            (1, self.subscription_changed),
        ]

    def http_access(self) -> Event:
        r = self.rng
        method = r.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE"])
        path, status = self.path(), r.choice([200, 200, 200, 201, 204, 304, 400, 404, 500])
        millis = round(r.lognormvariate(3, 1), 1)
        extras = {
            "method": method,
            "path": path,
            "status_code": status,
            "duration_ms": millis,
            "client_ip": self.ip(),
            "user_agent": r.choice(USER_AGENTS),
            "bytes_sent": r.randrange(0, 500_000),
            "trace_id": self.uuid(),
            "span_id": self.hex(16),
            "ts_ms": 1_705_309_200_000 + r.randrange(86_400_000),
            "pod": f"orders-api-{self.hex(10)}-{self.hex(5)}",
        }
        line = f'{self.ip()}:{r.randrange(1024, 65535)} - "{method} {path} HTTP/1.1" {status}'
        return ("INFO", *LOGGERS["http"], line, extras)

    def user_logged_in(self) -> Event:
        r = self.rng
        extras = {
            "user_id": self.user_id(),
            "ip_address": self.ip(),
            "session_id": f"sess{r.randrange(10**6)}",
            "user_agent": r.choice(USER_AGENTS),
            "environment": "production",
            "service": "orchestrator",
            "version": "1.0.0",
        }
        return ("INFO", *LOGGERS["auth"], "User logged in", extras)

    def order_placed(self) -> Event:
        r = self.rng
        extras = {
            "order_id": self.order_id(),
            "user_id": self.user_id(),
            "total_amount": self.amount(),
            "currency": r.choice(["USD", "EUR", "GBP"]),
            "item_count": r.randrange(1, 12),
            "payment_method": r.choice(["credit_card", "paypal", "apple_pay", "bank_transfer"]),
        }
        return ("INFO", *LOGGERS["orders"], "Order placed", extras)

    def processing_order(self) -> Event:
        order = self.order_id()
        items = self.rng.randrange(1, 12)
        message = self.rng.choice(
            [f"Processing order {order}", f"Processing order {order} with {items} items"]
        )
        return ("INFO", *LOGGERS["orders"], message, {"order_id": order})

    def payment_failed(self) -> Event:
        r = self.rng
        extras = {
            "order_id": self.order_id(),
            "payment_method": "credit_card",
            "error_code": r.choice(["insufficient_funds", "card_declined", "expired_card"]),
            "amount": self.amount(),
            "retry_attempt": r.randrange(1, 4),
            "psp_reference": f"88{r.randrange(10**13, 10**14)}",
        }
        message = r.choice(["Payment processing failed", "Order processing failed"])
        return ("ERROR", *LOGGERS["payments"], message, extras)

    def api_call(self) -> Event:
        r = self.rng
        extras: dict[str, Any] = {
            "api": "salesforce",
            "endpoint": r.choice(["/sobjects/Account", "/sobjects/Contact", "/query"]),
            "method": r.choice(["GET", "POST", "PATCH"]),
            "request_id": self.uuid(),
        }
        if r.random() < 0.5:
            return ("INFO", *LOGGERS["api"], "API request", extras)
        extras |= {
            "status_code": r.choice([200, 201, 204, 400, 401, 503]),
            "duration_ms": r.randrange(20, 3_000),
            "rate_limit_remaining": r.randrange(0, 15_000),
        }
        return ("INFO", *LOGGERS["api"], "API response", extras)

    def sql_query(self) -> Event:
        r = self.rng
        extras = {
            "query": r.choice(SQL),
            "params": [r.randrange(1, 10**6), True],
            "row_count": r.randrange(0, 500),
            "execution_time_ms": r.randrange(1, 200),
        }
        return ("DEBUG", *LOGGERS["sql"], "SQL query executed", extras)

    def slow_query(self) -> Event:
        r = self.rng
        extras = {
            "query_type": "user_search",
            "query": r.choice(SQL),
            "duration_ms": r.randrange(1_000, 9_000),
            "threshold_ms": 1_000,
        }
        return ("WARNING", *LOGGERS["sql"], "Slow query detected", extras)

    def cache_lookup(self) -> Event:
        r = self.rng
        extras = {
            "key": f"user_preferences_{r.randrange(10**5)}",
            "hit": r.random() < 0.8,
            "ttl_remaining": r.randrange(0, 3_600),
        }
        return ("DEBUG", *LOGGERS["cache"], "Cache lookup", extras)

    def circuit_breaker(self) -> Event:
        r = self.rng
        retry_at = datetime(2024, 1, 15, 10, 30) + timedelta(seconds=r.randrange(86_400))
        extras = {
            "service": r.choice(COMPONENTS),
            "previous_state": "closed",
            "new_state": "open",
            "failure_count": r.randrange(5, 20),
            "last_error": r.choice(ERRORS),
            "will_retry_at": retry_at.isoformat(),
        }
        return ("WARNING", *LOGGERS["system"], "Circuit breaker state change", extras)

    def job_completed(self) -> Event:
        r = self.rng
        extras = {
            "job_id": self.uuid(),
            "job_type": r.choice(["email_digest", "invoice_export", "search_reindex"]),
            "recipients_count": r.randrange(0, 5_000),
            "duration_seconds": r.randrange(1, 600),
        }
        return ("INFO", *LOGGERS["jobs"], "Background job completed", extras)

    def feature_flag(self) -> Event:
        r = self.rng
        extras = {
            "flag": r.choice(["new_checkout_flow", "dark_mode", "fast_search"]),
            "user_id": self.user_id(),
            "result": r.random() < 0.5,
        }
        return ("INFO", *LOGGERS["orchestrator"], "Feature flag evaluated", extras)

    def failed_login(self) -> Event:
        r = self.rng
        extras = {
            "username": f"{r.choice(['jdoe', 'asmith', 'mlopez', 'kchen'])}{r.randrange(100)}",
            "ip_address": self.ip(),
            "attempt_number": r.randrange(1, 6),
            "user_agent": r.choice(USER_AGENTS),
            "reason": r.choice(["invalid_password", "unknown_user", "account_locked"]),
        }
        return ("WARNING", *LOGGERS["auth"], "Failed login attempt", extras)

    def memory_high(self) -> Event:
        current = self.rng.randrange(1_500, 2_000)
        extras = {"current_mb": current, "threshold_mb": 2_000, "percentage": current // 20}
        return ("WARNING", *LOGGERS["system"], "Memory usage high", extras)

    def external_error(self) -> Event:
        r = self.rng
        extras = {
            "api": "email_service",
            "endpoint": "/send",
            "status_code": r.choice([500, 502, 503, 504]),
            "error_message": r.choice(ERRORS),
            "will_retry": True,
            "url": f"https://api.mailer.example.com/v3/send?batch={r.randrange(10**6)}",
        }
        return ("ERROR", *LOGGERS["api"], "External API error", extras)

    def validation_failed(self) -> Event:
        extras = {
            "entity": "user_profile",
            "validation_errors": {"email": "invalid_format", "age": "must_be_positive"},
            "source": "api_request",
        }
        return ("ERROR", *LOGGERS["orchestrator"], "Data validation failed", extras)

    def operation_failed(self) -> Event:
        r = self.rng
        trace = r.choice(TRACEBACKS)
        extras = {
            "operation": "data_import",
            "file": f"/data/imports/2024-01-{r.randrange(1, 29):02d}/accounts.csv",
            "line_number": r.randrange(1, 50_000),
            "error_type": trace.rsplit("\n", 1)[-1].split(":", 1)[0].rsplit(".", 1)[-1],
            "exception": trace,
        }
        return ("ERROR", *LOGGERS["jobs"], "Operation failed", extras)

    def connection_lost(self) -> Event:
        r = self.rng
        last = datetime(2024, 1, 15, 10, 0) + timedelta(seconds=r.randrange(86_400))
        extras = {
            "database": "primary",
            "last_successful_query": last.isoformat(),
            "connection_attempts": 5,
            "action": "switching_to_readonly_replica",
            "dsn_host": "db-primary.internal:5432",
        }
        return ("CRITICAL", *LOGGERS["system"], "Database connection lost", extras)

    def agent_delegated(self) -> Event:
        r = self.rng
        extras = {
            "source_agent": "orchestrator",
            "target_agent": r.choice(["salesforce", "jira", "servicenow"]),
            "task_id": f"task-{r.randrange(10**4)}",
            "task_type": "data_retrieval",
            "expected_duration_ms": 5_000,
            "trace_id": self.uuid(),
            "instruction_preview": "Get all accounts...",
        }
        return ("INFO", *LOGGERS["orchestrator"], "Agent task delegated", extras)

    def llm_call(self) -> Event:
        r = self.rng
        input_tokens, output_tokens = r.randrange(50, 4_000), r.randrange(10, 1_000)
        extras = {
            "component": "orchestrator",
            "operation": "llm_call",
            "duration_ms": round(r.uniform(200, 9_000), 2),
            "status": "success",
            "metadata": {
                "model": r.choice(["gpt-4", "gpt-3.5-turbo"]),
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            },
        }
        return ("INFO", *LOGGERS["orchestrator"], "ORCHESTRATOR_LLM_CALL", extras)

    def server_started(self) -> Event:
        r = self.rng
        extras = {
            "port": 8000,
            "environment": "production",
            "version": f"1.{r.randrange(10)}.{r.randrange(20)}",
            "git_sha": self.hex(40),
            "python": "3.11.7",
        }
        return ("INFO", *LOGGERS["system"], "Server started", extras)

    def deprecated(self) -> Event:
        extras = {
            "function": "get_user_by_email",
            "replacement": "get_user",
            "deprecation_date": "2024-06-01",
            "caller": "sync_contacts",
        }
        return ("WARNING", *LOGGERS["orchestrator"], "Deprecated function called", extras)

    def batch_completed(self) -> Event:
        r = self.rng
        count = r.randrange(10, 10_000)
        failures = r.randrange(0, 10)
        extras = {
            "item_count": count,
            "success_count": count - failures,
            "failure_count": failures,
            "duration_ms": r.randrange(100, 60_000),
        }
        return ("INFO", *LOGGERS["jobs"], "Batch processing completed", extras)

    def permission_check(self) -> Event:
        r = self.rng
        extras = {
            "user_id": self.user_id(),
            "resource": r.choice(["financial_reports", "admin_panel", "orders"]),
            "action": "read",
            "granted": r.random() < 0.9,
        }
        return ("INFO", *LOGGERS["auth"], "Permission check", extras)

    def token_refreshed(self) -> Event:
        extras = {
            "user_id": self.user_id(),
            "token_type": "Bearer",
            "expires_in": 3_600,
            "scope": "read write",
        }
        return ("INFO", *LOGGERS["auth"], "Access token refreshed", extras)

    def health_check_failed(self) -> Event:
        r = self.rng
        component = r.choice(COMPONENTS)
        message = f"Health check failed for {component}: {r.choice(ERRORS)}"
        return ("ERROR", *LOGGERS["system"], message, {"component": component})

    def subscription_changed(self) -> Event:
        r = self.rng
        extras = {
            "user_id": self.user_id(),
            "old_plan": "basic",
            "new_plan": r.choice(["premium", "team", "enterprise"]),
            "amount": self.amount(),
        }
        return ("INFO", *LOGGERS["orders"], "Subscription changed", extras)


def records(count: int, seed: int, decimal_trace_ids: bool) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    events = Events(rng)
    weighted = events.all()
    makers = [make for _, make in weighted]
    weights = [weight for weight, _ in weighted]
    start = datetime(2024, 1, 15, 9, 0, 0)
    threads = [(140231245678912 + 4096 * i, f"ThreadPoolExecutor-0_{i}") for i in range(8)]
    threads.append((140231250000000, "MainThread"))
    for seq in range(count):
        level, logger, module, function, message, extras = rng.choices(makers, weights)[0]()
        thread, thread_name = rng.choice(threads)
        record = {
            "timestamp": (start + timedelta(microseconds=seq * 997)).isoformat() + "Z",
            "level": level,
            "logger": logger,
            "message": message,
            "module": module,
            "function": function,
            "line": rng.randrange(20, 900),
            "thread": thread,
            "thread_name": thread_name,
            "process": 4242,
            **extras,
        }
        if decimal_trace_ids:
            record["dd.trace_id"] = str(rng.getrandbits(64))
            record["dd.span_id"] = str(rng.getrandbits(64))
        yield record


def changes(before: Any, after: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """The values that differ, by path."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in before.keys() | after.keys():
            yield from changes(before.get(key), after.get(key), f"{path}.{key}")
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            yield from changes(old, new, f"{path}[{index}]")
    elif before != after:
        yield path.lstrip("."), before, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decimal-trace-ids", action="store_true")
    parser.add_argument("--examples", type=int, default=5, help="changed records to show")
    args = parse_sized(parser, records=10_000)
    counters: Counter[str] = Counter()
    redactor = Redactor(
        keys=dict.fromkeys(DEFAULT_SECRET_KEYS, "mask"),
        detectors=[(d, "mask") for d in BUILTIN_DETECTORS],
        counters=counters,
    )
    changed, seconds, size = 0, 0.0, 0
    examples: list[dict[str, Any]] = []
    stream = records(args.records, args.seed, args.decimal_trace_ids)
    while batch := list(itertools.islice(stream, 10_000)):
        before = [orjson.dumps(r) for r in batch]
        started = time.perf_counter()
        for r in batch:
            redactor(r)
        seconds += time.perf_counter() - started
        for original, r in zip(before, batch, strict=True):
            size += len(original)
            if orjson.dumps(r) == original:
                continue
            changed += 1
            if len(examples) < args.examples:
                found = changes(orjson.loads(original), r)
                examples.append({path: [old, new] for path, old, new in found})
    count = args.records
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "records": count,
        "mean_record_bytes": round(size / count) if count else 0,
        "records_changed": changed,
        "false_positive_rate_pct": round(100 * changed / count, 4) if count else 0.0,
        "redactions": dict(sorted(counters.items())),
        "us_per_record": round(seconds / count * 1e6, 2) if count else 0.0,
        "examples": examples,
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
