"""Peak memory of a build, measured in a fresh process (shared by the memory-bound tests)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """import sys
{imports}
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS:')
{run}
print(status('VmHWM:') - before)
"""


def build_peak_rss(imports: str, run: str, args: list[str]) -> int:
    """Peak resident bytes of ``run`` (code; ``sys.argv[1:]`` are ``args``) above the memory
    after ``imports``: the peak is reset (/proc/self/clear_refs) once those are loaded, so
    the figure is what the build itself adds."""
    code = _PROBE.format(imports=imports, run=run)
    out = subprocess.run([sys.executable, "-c", code, *args], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1])
