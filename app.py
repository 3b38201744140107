"""dream3d web app: `python app.py [--host 127.0.0.1] [--port 7860] [--auth USER:PASS] [--share] [--outputs DIR]`.

The UI lives in dream3d/app/ (see README, "Web app").
"""

import sys

from dream3d.app import main

if __name__ == "__main__":
    sys.exit(main())
