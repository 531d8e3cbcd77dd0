"""The GitHub Actions workflow cannot silently rot: every `make` it runs names targets the Makefile
has, the GPU job builds the book with the same target `make test` drives with PARAMS=smoke, with a
parameter set the executor accepts, and publishes the folder that build writes its site to."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "book.yml"
MAKEFILE = REPO_ROOT / "Makefile"
MAKE_OPTIONS_WITH_ARG = {"-C", "-f", "--file", "--makefile", "-j", "--jobs", "-I", "-o", "-W", "-l"}


def makefile_targets(text: str) -> set[str]:
    """Targets of rules (``name ...: prereqs``), not variable assignments or special targets."""
    targets = set()
    for line in text.splitlines():
        if not line or line[0] in "\t#" or line.startswith(" "):
            continue
        m = re.match(r"^([^:=#]+?)\s*::?(?!=)(.*)$", line)
        if not m:
            continue
        for name in m.group(1).split():
            if not name.startswith("."):
                targets.add(name)
    return targets


def recipe(text: str, target: str) -> list[str]:
    """The recipe lines of ``target``."""
    lines, inside = [], False
    for line in text.splitlines():
        if re.match(rf"^{re.escape(target)}\s*::?(?!=)", line):
            inside = True
            continue
        if inside:
            if line.startswith("\t"):
                lines.append(line.strip())
            elif line.strip() and not line.startswith("#"):
                break
    return lines


def make_calls(script: str) -> list[tuple[list[str], dict[str, str]]]:
    """Every make invocation in a shell script: (targets, variables)."""
    calls = []
    for command in re.split(r"&&|\|\||;|\n|\|", script):
        try:
            words = shlex.split(command, comments=True)
        except ValueError:
            words = command.split()
        for i, word in enumerate(words):
            if word in ("make", "$(MAKE)", "${MAKE}", "gmake") or word.endswith("/make"):
                targets, variables, skip = [], {}, False
                for arg in words[i + 1:]:
                    if skip:
                        skip = False
                    elif arg in MAKE_OPTIONS_WITH_ARG:
                        skip = True
                    elif arg.startswith("-"):
                        continue
                    elif "=" in arg:
                        key, value = arg.split("=", 1)
                        variables[key] = value
                    else:
                        targets.append(arg)
                calls.append((targets, variables))
                break
    return calls


def runs_on(job: dict) -> list[str]:
    value = job.get("runs-on", [])
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def workflow() -> dict:
    assert WORKFLOW.is_file(), f"{WORKFLOW} is missing"
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def makefile() -> str:
    return MAKEFILE.read_text()


def job_make_calls(job: dict) -> list[tuple[list[str], dict[str, str]]]:
    return [call for step in job.get("steps", []) if "run" in step for call in make_calls(step["run"])]


def accepted_param_sets() -> list[str]:
    from book.execute import PARAM_SETS

    return list(PARAM_SETS)


def test_make_calls_parser():
    assert make_calls("make book PARAMS=paper") == [(["book"], {"PARAMS": "paper"})]
    assert make_calls("cd x && make -C . -j 2 test\nmake") == [(["test"], {}), ([], {})]
    assert makefile_targets("A ?= 1\nB := 2\n.PHONY: x\nx: y\n\techo\n$(V)/f: p\n") == {"x", "$(V)/f"}


def test_every_make_target_in_the_workflow_exists(workflow, makefile):
    targets = makefile_targets(makefile)
    used = [(name, call) for name, job in workflow["jobs"].items() for call in job_make_calls(job)]
    assert used, "the workflow runs no make command"
    for name, (call_targets, _) in used:
        for target in call_targets:
            assert target in targets, f"job {name} runs `make {target}`, which the Makefile does not define"


def test_ubuntu_job_runs_make_test(workflow):
    jobs = [job for job in workflow["jobs"].values() if "ubuntu-latest" in runs_on(job)]
    assert any(["test"] == targets for job in jobs for targets, _ in job_make_calls(job)), \
        "no ubuntu-latest job runs `make test`"


def test_gpu_job_builds_the_book_like_make_test_does(workflow, makefile):
    # the target `make test` drives with PARAMS=smoke, e.g. `$(MAKE) book PARAMS=smoke`
    smoke = [targets for line in recipe(makefile, "test") for targets, variables in make_calls(line)
             if variables.get("PARAMS") == "smoke"]
    assert smoke and len(smoke[0]) == 1, f"`make test` no longer runs a PARAMS=smoke build: {recipe(makefile, 'test')}"
    book_target = smoke[0][0]

    gpu_jobs = {name: job for name, job in workflow["jobs"].items() if "gpu" in runs_on(job)}
    assert gpu_jobs, "no job runs on the self-hosted GPU runner"
    for name, job in gpu_jobs.items():
        assert "self-hosted" in runs_on(job), f"job {name}: runs-on {runs_on(job)}"
        calls = [(t, v) for t, v in job_make_calls(job) if book_target in t]
        assert calls, f"GPU job {name} does not run `make {book_target}` (the target `make test` drives)"
        for _, variables in calls:
            params = variables.get("PARAMS")
            assert params in accepted_param_sets(), \
                f"GPU job {name} runs make {book_target} PARAMS={params}, not one of {accepted_param_sets()}"


def test_gpu_job_publishes_the_site_it_built(workflow, makefile):
    from book import SITE_DIRNAME

    build_default = re.search(r"^BUILD\s*\??=\s*(\S+)", makefile, re.M)
    assert build_default, "the Makefile no longer defines BUILD"
    for name, job in workflow["jobs"].items():
        if "gpu" not in runs_on(job):
            continue
        params = [v["PARAMS"] for _, v in job_make_calls(job) if "PARAMS" in v]
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-pages-artifact")]
        assert uploads, f"GPU job {name} does not upload a Pages artifact"
        site = build_default.group(1).replace("$(PARAMS)", params[-1]) + "/" + SITE_DIRNAME
        assert uploads[0]["with"]["path"].rstrip("/") == site, \
            f"GPU job {name} publishes {uploads[0]['with']['path']}, but the site is built in {site}"
    deploy = [job for job in workflow["jobs"].values()
              if any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in job.get("steps", []))]
    assert deploy, "no job deploys to GitHub Pages"
    assert deploy[0].get("permissions", {}).get("pages") == "write"
    assert deploy[0].get("permissions", {}).get("id-token") == "write"
