import os
import pathlib

import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# Property tests run on a loaded 2-core CI machine: no deadlines, bounded example counts.
settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=1000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def specs_dir():
    return SPECS


def stem_error(tmp_path, ops, input_shape="8x8x8"):
    """The SpecError of a one-block network whose stem is `ops` (a bad op under test)."""
    from cliquegraph import SpecError, elaborate
    path = tmp_path / "bad.clq"
    path.write_text(f"network b {{ input {input_shape}; stem {{ {ops} }}\n"
                    "blocks 1 { layers 1; width 4 } head { pool global; fc 2 } }")
    with pytest.raises(SpecError) as e:
        elaborate(path)
    assert e.value.line is not None  # located
    return e.value
