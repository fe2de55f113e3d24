"""Write dreamgym_env/data/webarena/webarena_lite_tasks.json from browsergym-webarenalite.

WebArena-Lite (165 of WebArena's 812 tasks, with revised intents and graders) is the paper's
WebArena benchmark. Its intents differ from webarena-verified's for 137 of the 165 tasks, and
its graders grade its own intents, so the synthetic ``DreamGym-WebArenaLite-v0`` shows them too.
The package ships this small extract (id, intent, sites, start URL, template id; no graders) so
the synthetic env works without BrowserGym; the real twin grades through browsergym-webarenalite.

    pip install --no-deps browsergym-webarenalite==0.14.3
    python scripts/build_webarena_lite_tasks.py
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "dreamgym_env" / "data" / "webarena" / "webarena_lite_tasks.json"


def main() -> None:
    # found, not imported: its __init__ downloads NLTK data
    package = Path(next(iter(importlib.util.find_spec("browsergym").submodule_search_locations))) / "webarenalite"
    raw = json.loads((package / "test_webarena_lite.raw.json").read_text())
    tasks = [
        {"task_id": t["old_task_id"], "lite_task_id": t["task_id"], "intent": t["intent"], "sites": t["sites"],
         "start_urls": t["start_url"].split(" |AND| ") if t["start_url"] else [],
         "intent_template_id": t["intent_template_id"], "require_login": t["require_login"]}
        for t in sorted(raw, key=lambda t: t["old_task_id"])
    ]
    source = f"browsergym-webarenalite {metadata.version('browsergym-webarenalite')}, test_webarena_lite.raw.json"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"source": source, "tasks": tasks}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(tasks)} tasks -> {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
