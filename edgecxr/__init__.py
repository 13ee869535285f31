"""edgecxr: chest X-ray COVID-19 classification from training to the edge.

Importing ``edgecxr`` is cheap and torch-free; heavy layers load when used.
"""

__version__ = "0.1.0"
