"""The publishing workflow, the README and CI must not drift apart: same commands, same Python."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def readme_commands() -> list[str]:
    """The commands of the README's 'Two commands' block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def test_readme_has_exactly_two_commands():
    assert readme_commands() == ["bash scripts/book.sh", "bash scripts/test.sh"]


def test_workflow_runs_the_readme_main_job_command_verbatim():
    main_job = readme_commands()[0]
    runs = [step.get("run", "").strip() for step in workflow()["jobs"]["build"]["steps"]]
    assert runs.count(main_job) == 1, f"the build job must run `{main_job}` exactly once, found {runs}"
    # and nothing re-implements the job's steps beside it
    assert not any("jupyter-book" in r or "papermill" in r or "pip install" in r for r in runs)


def test_workflow_uses_the_projects_python_version():
    wf = workflow()
    py = wf["env"]["PYTHON_VERSION"]
    setup = [s for s in wf["jobs"]["build"]["steps"] if s.get("uses", "").startswith("actions/setup-python")]
    assert setup and setup[0]["with"]["python-version"] in (py, "${{ env.PYTHON_VERSION }}")
    assert f"Python {py}" in (ROOT / "README.md").read_text()
    assert f"python={py}" in (ROOT / "environment.yml").read_text()
    assert "python3.11" in (ROOT / "scripts" / "env.sh").read_text() and py == "3.11"


def test_triggers_previews_and_deploy():
    wf = workflow()
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in wf["on"] and wf["on"]["schedule"][0]["cron"]
    steps = wf["jobs"]["build"]["steps"]
    preview = [s for s in steps if s.get("with", {}).get("name") == "book-html-preview"]
    assert preview and preview[0]["if"] == "github.event_name == 'pull_request'"
    assert "pull_request" in wf["jobs"]["deploy"]["if"] and "!=" in wf["jobs"]["deploy"]["if"]
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in wf["jobs"]["deploy"]["steps"])
    caches = [s for s in steps if s.get("uses", "").startswith("actions/cache")]
    assert len(caches) == 2 and all(s["if"] == "env.FRESH != 'true'" for s in caches)  # weekly run: no caches
    assert wf["env"]["FRESH"] == "${{ github.event_name == 'schedule' }}"
    failed = [s for s in steps if s.get("if") == "failure()"]
    assert failed and "_build/executed" in failed[0]["with"]["path"]


def test_ci_runs_the_readme_test_command():
    assert readme_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_book_config_carries_repository_and_published_urls_once():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo, published = cfg["repository"]["url"], cfg["html"]["baseurl"]
    readme = (ROOT / "README.md").read_text()
    assert repo.startswith("https://github.com/") and published.startswith("https://")
    assert published in readme and repo in readme
