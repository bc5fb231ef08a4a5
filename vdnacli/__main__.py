import os
import sys

# `python -m vdnacli` puts the working directory first on sys.path; a data folder there
# named like one of our packages (say ./registry) must not shadow the real one.
if sys.path and sys.path[0] and not os.path.isfile(os.path.join(sys.path[0], "registry", "__init__.py")):
    sys.path.pop(0)

from vdnacli.cli.app import main  # noqa: E402

main()
