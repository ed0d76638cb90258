"""The paper's released edit settings (torch-free, so that ``edit --help`` can show them at once).

``landscape``: the README command of the official code; ``face``: its argparse defaults.
"""

PRESETS: dict[str, dict] = {
    "landscape": dict(steps=300, lr=0.1, lambda_sim=0.002, lambda_id=0.0, truncation=0.7),
    "face": dict(steps=300, lr=0.05, lambda_sim=0.008, lambda_id=0.005, truncation=0.7),
}
