"""`vdna config`: each effective setting, its value, and where it came from."""
from __future__ import annotations

import os
from pathlib import Path

from vdnacli.cli.options import JsonOpt
from vdnacli.cli.output import Output


def config_cmd(json: JsonOpt = False):
    """Show each effective setting, its value and where it came from.

    Precedence: command-line flag > environment (VDNA_*) > ./vdna.yaml > user config
    (config.yaml in the user config folder, or the file VDNA_CONFIG names) > default.
    Keys and meanings: vdna.yaml.example.

    Example: vdna config · VDNA_BINS=500 vdna config --json
    """
    from vdnacli.config import CONFIG_ENV, CONFIG_FILE, explain, user_config_path

    resolved = explain()
    from_env = bool(os.environ.get(CONFIG_ENV))
    project, user = Path.cwd() / CONFIG_FILE, user_config_path()
    out = Output(json=json)
    if json:
        out.emit_json({
            "settings": {name: {"value": str(v) if isinstance(v, Path) else v, "from": o.kind, "detail": o.detail}
                         for name, (v, o) in resolved.items()},
            "files": {"project": {"path": str(project), "exists": project.is_file()},
                      "user": {"path": str(user), "exists": user.is_file(), "from_env": CONFIG_ENV if from_env else None}},
        })
        return
    out.table(None, ["setting", "value", "from"],
              [[name, "—" if v is None else str(v), str(o)] for name, (v, o) in resolved.items()])
    out.print("")
    out.print(f"project file: ./{CONFIG_FILE} ({'read' if project.is_file() else 'none here'})")
    out.print(f"user file:    {user} ({'read' if user.is_file() else 'none'}"
              + (f"; from {CONFIG_ENV}" if from_env else "") + ")")


def register(app) -> None:
    app.command("config")(config_cmd)
