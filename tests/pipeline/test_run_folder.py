"""The output rules every writing command shares: never into, onto or around what it reads."""

from __future__ import annotations

import pytest

from modelpress.errors import InputError
from modelpress.pipeline import refuse_inside_inputs


def test_references_with_a_split_or_weights_protect_their_files(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"x")
    with pytest.raises(InputError, match=r"output .*d.npz is the input .*d.npz#test"):
        refuse_inside_inputs(data, [f"{data}#test"])
    art = tmp_path / "art"
    art.mkdir()
    weights = tmp_path / "w" / "w.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    with pytest.raises(InputError, match="is the input pkg.mod:make@"):
        refuse_inside_inputs(weights, [f"pkg.mod:make@{weights}"])
    with pytest.raises(InputError, match="is inside the input"):
        refuse_inside_inputs(art / "sub", [f"hf:{art}"])
    refuse_inside_inputs(tmp_path / "elsewhere", [f"{data}#test", f"hf:{art}", "zoo:mlp", "sklearn:iris#train"])
