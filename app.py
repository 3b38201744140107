"""dream3d web app: `python app.py [--host 127.0.0.1] [--port 7860] [--auth-file FILE] [--share] [--outputs DIR]
[--allow-prior ID_OR_PATH] [--max-steps N] [--limit KEY=MAX] ...` (`python app.py --help` lists them all).

The UI lives in dream3d/app/ (see README, "Web app").
"""

import sys

from dream3d.app import main

if __name__ == "__main__":
    sys.exit(main())
