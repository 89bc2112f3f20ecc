"""Init time of each function vs a hello-world Lambda, the way Lambda starts them: the process is
exec'd with the Runtime API's address and its first GET .../invocation/next marks the end of
init. A stand-in Runtime API (this script) answers nothing, so the function waits there and is
killed. Median of RUNS starts, the functions taken in turn; root-certificate files opened
before the first poll are counted with strace when it is installed."""

import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

RUNS = 31
FUNCTIONS = ["hello-lambda", "user-api", "consent-callback", "mailbox-sync", "sync-worker"]
TARGET_RATIO = 2.0

first_poll = threading.Event()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/invocation/next"):
            first_poll.set()
            time.sleep(5)  # hold the poll; the function is killed meanwhile
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def env(port):
    e = dict(os.environ)
    e.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9",
        "O365_DEFAULT_APP_SECRET_ID": "a", "O365_READ_ONLY_APP_SECRET_ID": "b", "O365_STATE_KEY_SECRET_ID": "c",
        "O365_SYNC_QUEUE_URL": "http://127.0.0.1:9/1/q", "O365_FANOUT_QUEUE_URL": "http://127.0.0.1:9/1/f", "O365_CONSENT_REDIRECT_URI": "https://api.example.com/consent/callback",
        "O365_FRONTEND_ORIGIN": "https://app.example.com", "O365_JWT_JWKS_URL": "https://idp.example.com/jwks",
        "O365_JWT_ISSUER": "https://idp.example.com/", "O365_JWT_AUDIENCE": "o365-sync-api",
        "RUST_LOG": "error",
    })
    return e


def one_start(binary, port):
    first_poll.clear()
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = first_poll.wait(10)
    elapsed = time.perf_counter() - started
    proc.kill()
    proc.wait()
    return elapsed if ok else None


def cert_opens(binary, port):
    if not shutil.which("strace"):
        return None
    proc = subprocess.Popen(["strace", "-f", "-e", "trace=openat", binary], env=env(port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_poll.clear()
    first_poll.wait(10)
    time.sleep(0.2)
    proc.kill()
    _, err = proc.communicate()
    return sum(1 for line in err.splitlines() if "/etc/ssl/certs" in line or "ca-certificates" in line)


def main():
    release, out = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Round robin: a drift in the machine's load reaches every function alike.
    times = {f: [] for f in FUNCTIONS}
    for _ in range(RUNS):
        for f in FUNCTIONS:
            t = one_start(os.path.join(release, f), port)
            if t is not None:
                times[f].append(t)
    results = {}
    for f in FUNCTIONS:
        binary = os.path.join(release, f)
        results[f] = {"init_ms_median": statistics.median(times[f]) * 1000 if times[f] else None,
                      "runs": len(times[f]), "cert_opens": cert_opens(binary, port),
                      "size_mb": os.path.getsize(binary) / 1e6}
    hello = results["hello-lambda"]["init_ms_median"]
    print(f"{'function':<18} {'init ms (median)':>17} {'vs hello':>9} {'target':>8} {'cert files':>11} {'size MB':>8}")
    for f, r in results.items():
        ratio = r["init_ms_median"] / hello if hello and r["init_ms_median"] else None
        r["vs_hello"] = ratio
        verdict = "" if f == "hello-lambda" else ("ok" if ratio and ratio <= TARGET_RATIO else "MISSED")
        print(f"{f:<18} {r['init_ms_median'] or float('nan'):>17.2f} {ratio or float('nan'):>8.2f}x "
              f"{'≤2x ' + verdict if f != 'hello-lambda' else '':>8} {r['cert_opens'] if r['cert_opens'] is not None else '-':>11} {r['size_mb']:>8.1f}")
    json.dump(results, open(out, "w"), indent=2)


if __name__ == "__main__":
    main()
