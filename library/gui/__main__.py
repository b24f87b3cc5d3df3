"""`python -m library.gui [--host H] [--port P] [--listen --token T] ...`: serve the web front-end."""

from __future__ import annotations

import logging
import sys

import uvicorn

from library.folder_lock import FolderInUse, lock_folder
from library.logging_setup import configure_logging

from .app import create_app
from .settings import exit_on_settings_error

logger = logging.getLogger("furnace")


def main(argv: list[str]) -> int:
    settings = exit_on_settings_error(argv)
    configure_logging("info")
    try:  # two servers on one runs root would both start each queued run
        lock = lock_folder(settings.runs_root, "use that server, or pass another --runs-root")
    except FolderInUse as error:
        sys.stderr.write(f"run_gui.sh: {error}\n")
        return 1
    except OSError as error:
        sys.stderr.write(f"run_gui.sh: cannot use --runs-root {settings.runs_root}: {error.strerror}\n")
        return 1
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    query = f"?token={settings.token}" if settings.token else ""
    print(f"Furnace GUI: http://{shown}:{settings.port}/{query}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
