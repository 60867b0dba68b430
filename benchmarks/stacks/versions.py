"""Print {normalised distribution name: version} for everything installed in the running venv, as JSON.

The setup and the driver run this with each stack's interpreter to learn what that venv holds.
"""

import importlib.metadata as metadata
import json
import re

if __name__ == "__main__":
    names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in metadata.distributions()}
    print(json.dumps(names))
