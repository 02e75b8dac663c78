"""What deploy/compose-test.sh asks of the running compose stack, besides the end-to-end suite.

`wait URL SECONDS`: the gateway's /api/health says ok (every service ready) within SECONDS.
`check --mail URL --traces URL`: the SMTP catcher (Mailpit's API) holds an email from the
notifier, and the trace collector (Jaeger's API) holds a trace that goes from the gateway
through tasks to the notifier (a task assigned: the request, then the event's handling).
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http only)
        return json.load(response)


def wait_healthy(base_url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = get_json(f"{base_url}/api/health")
            if health.get("status") == "ok":
                return
            last = json.dumps(health)
        except (OSError, ValueError) as exc:
            last = repr(exc)
        time.sleep(1)
    sys.exit(f"the stack was not healthy after {seconds:.0f} s: {last}")


def emails(mail_api: str) -> list[dict]:
    return get_json(f"{mail_api}/api/v1/messages")["messages"]


# A request through the gateway to tasks, and the notifier's handling of the event it caused.
EVENT_PATH = {"gateway", "tasks", "notifier"}


def services_of_traces(trace_api: str) -> list[set[str]]:
    """The services of each trace the gateway took part in."""
    return [
        {process["serviceName"] for process in trace["processes"].values()}
        for trace in get_json(f"{trace_api}/api/traces?service=gateway&limit=1000")["data"]
    ]


def check(mail_api: str, trace_api: str, seconds: float = 60) -> None:
    # Spans leave each service in batches (every 5 s), so the collector may lag a little.
    deadline = time.monotonic() + seconds
    while True:
        messages = emails(mail_api)
        traces = services_of_traces(trace_api)
        along_the_path = [services for services in traces if services >= EVENT_PATH]
        if messages and along_the_path:
            break
        if time.monotonic() > deadline:
            sys.exit(
                f"SMTP catcher: {len(messages)} emails; collector: {len(along_the_path)} of "
                f"{len(traces)} gateway traces reach {sorted(EVENT_PATH)} (services seen: "
                f"{get_json(f'{trace_api}/api/services')['data']})"
            )
        time.sleep(1)
    print(f"SMTP catcher: {len(messages)} emails, e.g. {messages[0]['Subject']!r}")
    print(
        f"collector: {len(traces)} gateway traces, {len(along_the_path)} through "
        f"{sorted(EVENT_PATH)}; services: {sorted(set().union(*traces))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("wait")
    wait.add_argument("url")
    wait.add_argument("seconds", type=float)
    checks = commands.add_parser("check")
    checks.add_argument("--mail", required=True)
    checks.add_argument("--traces", required=True)
    args = parser.parse_args()
    if args.command == "wait":
        wait_healthy(args.url, args.seconds)
    else:
        check(args.mail, args.traces)


if __name__ == "__main__":
    main()
