"""``district``: one console script, one subcommand per component.

Each component keeps its own ``main(argv)``; this module only dispatches, and
imports a component only when it is asked for (``district count`` on an
installer's laptop should not import FastAPI).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "edge": ("edge.main", "run an edge agent (sensors and cameras -> MQTT)"),
    "gateway": ("gateway.main", "run the gateway (MQTT -> validation -> InfluxDB)"),
    "server": ("server.main", "run the guidance API"),
    "sim": ("firmware_sim.main", "run the simulated device fleet"),
    "display-bridge": ("edge.displays.main", "write sign states from the API to RS-485 LED count displays"),
    "keys": ("server.keys", "manage the guidance API's keys: add, list, rotate, revoke"),
    "demo": ("district.demo", "run the whole pipeline on this machine"),
    "check-config": ("district.check_config", "validate a site or device configuration file"),
    "provision": ("district.provision", "issue the site's devices their broker identities (TLS, passwords, ACL)"),
    "count": ("edge.camera.count_cli", "count line crossings in a video file"),
}


def usage() -> str:
    lines = ["usage: district COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "district COMMAND --help tells more."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"district: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
