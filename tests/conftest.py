"""Hypothesis profiles: "ci" (no deadline, more examples, seeds printed) and "dev" (fast).

Select with HYPOTHESIS_PROFILE; .ci/run sets "ci". CI machines are noisy, so no profile
has a deadline; every failure prints the seed to reproduce it.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=150,
    print_blob=True,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=60, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
