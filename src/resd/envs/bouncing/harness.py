"""Runs inside the sandbox: calls the candidate's predict_position once per timestamp.

Standalone script (standard library only; `resd.envs.sandbox.run_python` runs it as main.py):
reads {"times": [...], "limit": seconds, "nonce": str} from stdin, reads the candidate from
solution.py and prints one line, RESULT_MARKER + nonce + " " + JSON, with one entry per timestamp:
{"status": "ok", "value": [[x, y], ...]} or {"status": "error" | "timeout" | "bad_return",
"message": str}.

Why one process for all 15 timestamps: the upstream verifier starts one process per test with a
1 s timeout; starting 15 sandboxed interpreters per completion costs more than the programs
themselves. Here every timestamp still gets a fresh namespace (the program is re-executed, so
module-level state does not carry over between calls) and its own 1 s alarm covering both the
program's top level and the call. The sandbox's wall-clock limit backs that up for code that
ignores the alarm.

The program runs in this interpreter, as in the upstream verifier. The per-run nonce in the
result line and the judge's refusal of imports and frame introspection keep it from forging a
result; the sandbox around the whole process is what contains anything else.
"""

import io
import json
import math
import os
import signal
import sys
import traceback

RESULT_MARKER = "@@BOUNCINGSIM_RESULT@@"
SOLUTION_FILE = "solution.py"


class CallTimeout(BaseException):
    """Raised by the alarm; BaseException so that `except Exception` in the program cannot hide it."""


class BadReturn(Exception):
    """predict_position returned something that is not a list of finite [x, y] pairs."""


_ARMED = [False]
# The nonce (fresh per run, known only to the host and this script) keeps a program from
# printing a forged result line of its own.
_STATE = {"fires": 0, "results": None, "times": (), "out": None, "limit": 1.0, "nonce": ""}
GIVE_UP_FIRES = 20
"""Repeated alarms (1 s at REPEAT_ALARM) a program may swallow before the harness stops it,
reports what it has, and exits: waiting for the sandbox's wall clock would cost up to 20 s."""
MAX_TIMEOUTS = 2
"""After this many timed-out calls the remaining (later, so usually longer) timestamps are
reported as timeouts without running them: 15 x 1 s per completion would stall training."""
REPEAT_ALARM = 0.05
"""After the first alarm, the alarm repeats at this interval, so a program that swallows one
CallTimeout (a bare `except:`) is interrupted again."""


def _emit(results, out):
    out.write("\n" + RESULT_MARKER + _STATE["nonce"] + " " + json.dumps(results) + "\n")
    out.flush()


def _on_alarm(signum, frame):
    if not _ARMED[0]:
        return
    _STATE["fires"] += 1
    if _STATE["fires"] >= GIVE_UP_FIRES:
        results = list(_STATE["results"])
        message = "did not return within %g s and would not stop" % _STATE["limit"]
        results += [{"status": "timeout", "message": message}] * (len(_STATE["times"]) - len(results))
        _emit(results, _STATE["out"])
        os._exit(0)
    raise CallTimeout()


def _clean(value):
    """[[x, y], ...] as floats, or raise BadReturn saying what is wrong with the return value."""
    if not isinstance(value, (list, tuple)):
        raise BadReturn("predict_position(t) must return a list of [x, y] pairs, got %s" % type(value).__name__)
    pairs = []
    for item in value:
        # Like the official check, an entry's first two items are its x and y (extra ones are ignored).
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            raise BadReturn("each ball must be an [x, y] pair, got %.80r" % (item,))
        if not all(isinstance(c, (int, float)) for c in item[:2]):
            raise BadReturn("coordinates must be numbers, got %.80r" % (item,))
        x, y = float(item[0]), float(item[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise BadReturn("coordinates must be finite numbers, got %.80r" % (item,))
        pairs.append([x, y])
    return pairs


def _short_traceback(exc):
    """The traceback from the candidate's own frames on, last lines only."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != SOLUTION_FILE:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines)[-800:]


def evaluate(source, times, limit):
    code = compile(source, SOLUTION_FILE, "exec")
    results = []
    real_stdout = sys.stdout
    _STATE.update(results=results, times=times, out=real_stdout, limit=limit)
    signal.signal(signal.SIGALRM, _on_alarm)
    timeouts = 0
    for t in times:
        if timeouts >= MAX_TIMEOUTS:
            results.append({"status": "timeout",
                            "message": "not run: %d calls with smaller t already timed out" % timeouts})
            continue
        sys.stdout = io.StringIO()  # the program's own prints must not corrupt the result line
        try:
            _STATE["fires"] = 0
            _ARMED[0] = True
            signal.setitimer(signal.ITIMER_REAL, limit, REPEAT_ALARM)
            try:
                namespace = {"__name__": "solution", "__builtins__": __builtins__}
                exec(code, namespace)
                function = namespace.get("predict_position")
                if not callable(function):
                    raise NameError("the program does not define a function predict_position(t)")
                value = _clean(function(t))
            finally:
                _ARMED[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            results.append({"status": "ok", "value": value})
        except CallTimeout:
            _ARMED[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            timeouts += 1
            results.append({"status": "timeout", "message": "did not return within %g s" % limit})
        except BadReturn as exc:
            results.append({"status": "bad_return", "message": str(exc)})
        except (Exception, SystemExit) as exc:  # noqa: BLE001  (the program's error is the result)
            results.append({"status": "error", "message": _short_traceback(exc)})
        finally:
            sys.stdout = real_stdout
    return results


def main():
    request = json.loads(sys.stdin.read())
    _STATE["nonce"] = str(request.get("nonce", ""))
    with open(SOLUTION_FILE, encoding="utf-8") as f:
        source = f.read()
    results = evaluate(source, request["times"], float(request["limit"]))
    _emit(results, sys.stdout)


if __name__ == "__main__":
    main()
