#!/usr/bin/env bash
# Mutation-test the pure cores with mutmut 3: the shard state machine (actors/_core/_shard_core.py),
# the journal frame codec (actors/_journal/_codec.py) and the recovery scan
# (actors/_journal/_scan.py).
#
# Needs, in the active environment: pip install -e ".[test]" and pip install mutmut
# (or in one go: pip install -e ".[test,mutation]").
#
# Usage: bash tests/mutation/run_mutmut.sh
#   KEEP=1          keep the work directory (to run `mutmut show NAME` there afterwards)
#   MAX_CHILDREN=N  parallel mutant runs (default: mutmut's, one per CPU)
#
# mutmut 3 derives module names from file paths (src/writebehind/x.py -> writebehind.x), and
# this repository installs actors/ as the package writebehind. So the run happens in a
# temporary copy laid out as src/writebehind/, with the unit tests of the three cores beside
# it; the tests import the package as writebehind, exactly as they do in the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mutmut_cmd="${MUTMUT:-mutmut}"
command -v "$mutmut_cmd" >/dev/null || {
    echo "mutmut not found: pip install mutmut (or pip install -e \".[mutation]\")" >&2
    exit 2
}

work="$(mktemp -d "${TMPDIR:-/tmp}/writebehind-mutmut.XXXXXX")"
if [[ "${KEEP:-}" == 1 ]]; then
    echo "work directory (kept): $work"
else
    trap 'rm -rf "$work"' EXIT
fi

# The whole package (the cores import their siblings), the tests that exercise the cores
# in-process, and the spec whose worked example the codec must reproduce. Left out: tests that
# start a subprocess (test_journal_files.py: the child would import the installed, unmutated
# package) or go through the CLI (test_journal_cli.py: it imports writebehind.chaos, which
# only the installed package maps, from the working tree).
mkdir -p "$work/src" "$work/tests/journal" "$work/specs"
cp -R "$repo/actors" "$work/src/writebehind"
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +
tests=(
    tests/test_shard_core.py
    tests/test_shard_core_mutants.py
    tests/journal/__init__.py
    tests/journal/helpers.py
    tests/journal/test_journal_codec.py
    tests/journal/test_codec_mutants.py
    tests/journal/test_scan_mutants.py
    tests/journal/test_journal_spec.py
    tests/journal/test_journal_crash.py
)
for t in "${tests[@]}"; do
    if [[ -e "$repo/$t" ]]; then
        cp "$repo/$t" "$work/$t"
    else
        echo "note: $t does not exist here, measuring without it" >&2
    fi
done
cp "$repo/specs/journal-format.md" "$work/specs/"

# Hypothesis must not make a mutant's fate depend on luck or on earlier runs: a fixed
# derandomized profile, no example database.
cat > "$work/tests/conftest.py" <<'PY'
from hypothesis import HealthCheck, settings

settings.register_profile(
    "mutmut", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("mutmut")
PY

selection=""
for t in "${tests[@]}"; do
    [[ -e "$work/$t" ]] || continue
    case "$t" in */test_*.py) selection+="\"$t\", " ;; esac
done

cat > "$work/pyproject.toml" <<TOML
[tool.mutmut]
source_paths = ["src/writebehind/"]
only_mutate = [
    "src/writebehind/_core/_shard_core.py",
    "src/writebehind/_journal/_codec.py",
    "src/writebehind/_journal/_scan.py",
]
pytest_add_cli_args_test_selection = [${selection}]
# The installed package registers its pytest plugin (writebehind.harness) by entry point;
# the copy under test has no harness, and these tests do not use it.
pytest_add_cli_args = ["-p", "no:writebehind", "-p", "no:cacheprovider", "-q"]
also_copy = ["specs/"]

[tool.pytest.ini_options]
trio_mode = true
timeout = 300
TOML

cd "$work"
run_args=()
[[ -n "${MAX_CHILDREN:-}" ]] && run_args+=(--max-children "$MAX_CHILDREN")
echo "running mutmut in $work (a few minutes; the log is mutmut-run.log there)"
# mutmut may exit non-zero when mutants survive; the report below is the result.
"$mutmut_cmd" run ${run_args[@]+"${run_args[@]}"} >"$work/mutmut-run.log" 2>&1 || {
    status=$?
    if [[ ! -e mutants/src/writebehind/_core/_shard_core.py.meta ]]; then
        tail -c 4000 "$work/mutmut-run.log" >&2
        exit "$status"
    fi
}

"$mutmut_cmd" results --all true >"$work/results.txt"
echo
echo "$("$mutmut_cmd" --version): killed / total mutants per file"
for module in writebehind._core._shard_core writebehind._journal._codec writebehind._journal._scan; do
    awk -v prefix="$module." '
        index($1, prefix) == 1 && substr($1, length(prefix) + 1) !~ /[.]/ {
            total++
            name = $1; sub(/:$/, "", name)
            status = $2; for (i = 3; i <= NF; i++) status = status " " $i
            if (status == "killed") killed++
            else others[++n] = name " (" status ")"
        }
        END {
            printf "  %-28s %4d / %-4d (%.0f%%)\n", substr(prefix, 1, length(prefix) - 1),
                killed, total, total ? 100 * killed / total : 0
            for (i = 1; i <= n; i++) printf "      not killed: %s\n", others[i]
        }' "$work/results.txt"
done
if [[ "${KEEP:-}" == 1 ]]; then
    echo "inspect a mutant: cd $work && mutmut show NAME"
else
    echo "KEEP=1 keeps the work directory, to inspect a mutant there with: mutmut show NAME"
fi
