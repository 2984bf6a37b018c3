"""Seed models: shapes, the divisibility guard, cost counted from the model, checkpoint round trip."""
import pytest
import torch
from torch import nn

from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.models import (
    DEFAULT_INPUT,
    count_flops,
    create_model,
    load_checkpoint,
    model_summary,
    save_checkpoint,
)

SEG_THRESHOLDS = {"probability": [0.5] * 4, "min_area": [10] * 4}


def _save_tiny_segmenter(path, base_width=4):
    torch.manual_seed(0)
    model = create_model("resunet", base_width=base_width)
    save_checkpoint(
        path,
        model,
        task="segmenter",
        model_config={"name": "resunet", **model.config},
        preprocess=Preprocess(64, 320, mean=0.3, std=0.2),
        classes=["1", "2", "3", "4"],
        thresholds=SEG_THRESHOLDS,
        metrics={"dice": 0.5},
        extra={"epoch": 3},
    )
    return model


def test_resunet_outputs_one_logit_map_per_class_at_input_size():
    model = create_model("resunet", base_width=4, num_classes=3).eval()
    assert model(torch.randn(2, 1, 64, 320)).shape == (2, 3, 64, 320)


def test_default_resunet_is_16_to_256_channels():
    model = create_model("resunet")
    assert model.encoder.out_channels == (16, 32, 64, 128, 256)
    assert model.head.out_channels == 4


def test_classifier_outputs_one_logit_per_image():
    model = create_model("classifier", base_width=4, depth=3, blocks_per_stage=2).eval()
    assert model(torch.randn(3, 1, 32, 160)).shape == (3, 1)


@pytest.mark.parametrize("name,shape", [("resunet", (1, 1, 60, 320)), ("classifier", (1, 1, 32, 150))])
def test_input_not_divisible_by_16_is_a_clear_error(name, shape):
    model = create_model(name, base_width=4).eval()
    with pytest.raises(EdgesegError, match="not divisible by 16"):
        model(torch.zeros(shape))


def test_unknown_model_and_option_list_the_valid_ones():
    with pytest.raises(EdgesegError, match="resunet, classifier"):
        create_model("unet")
    with pytest.raises(EdgesegError, match="base_width"):
        create_model("resunet", widht=8)


def test_flop_counter_counts_conv_and_linear_macs():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 5))
    # conv: 2 out channels * 16 pixels * 9 taps; linear: 5 outputs * 32 inputs; FLOPs = 2 * MACs
    assert count_flops(model, (1, 1, 4, 4)) == 2 * (2 * 16 * 9 + 5 * 32)


def test_classifier_costs_at_most_a_quarter_of_the_resunet_at_default_sizes():
    seg = count_flops(create_model("resunet"), (1, 1, *DEFAULT_INPUT["segmenter"]))
    cls = count_flops(create_model("classifier"), (1, 1, *DEFAULT_INPUT["classifier"]))
    assert DEFAULT_INPUT["segmenter"] == (256, 1600)
    assert 0 < cls <= 0.25 * seg


def test_model_summary_prints_both_counts():
    text = model_summary(create_model("resunet", base_width=4), create_model("classifier", base_width=4),
                         {"segmenter": (64, 320), "classifier": (32, 160)})
    assert "segmenter" in text and "classifier" in text and text.count("GFLOPs") >= 2


def test_checkpoint_round_trip_restores_weights_and_contract(tmp_path):
    path = tmp_path / "seg.pt"
    model = _save_tiny_segmenter(path).eval()
    raw = torch.load(path, weights_only=True)
    assert raw["schema"] == "edgeseg.checkpoint/1" and raw["model"]["name"] == "resunet"
    loaded, meta = load_checkpoint(path)
    x = torch.randn(1, 1, 64, 320)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert meta.task == "segmenter" and meta.preprocess == Preprocess(64, 320, mean=0.3, std=0.2)
    assert meta.classes == ["1", "2", "3", "4"] and meta.thresholds == SEG_THRESHOLDS
    assert meta.metrics == {"dice": 0.5} and meta.extra == {"epoch": 3} and len(meta.sha256) == 64
    assert not list(tmp_path.glob("*.part"))


def test_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "seg.pt"
    _save_tiny_segmenter(path, base_width=4)
    payload = torch.load(path, weights_only=True)
    payload["model"]["base_width"] = 8  # the weights are still the width-4 ones
    torch.save(payload, path)
    with pytest.raises(EdgesegError, match=r"do not fit the ResUNet.*shape mismatch.*encoder\.stages\.0"):
        load_checkpoint(path)


def test_save_refuses_a_config_that_does_not_match_the_weights(tmp_path):
    model = create_model("classifier", base_width=4)
    with pytest.raises(EdgesegError, match="do not fit"):
        save_checkpoint(tmp_path / "c.pt", model, task="classifier", model_config={"name": "classifier", "base_width": 8},
                        preprocess=Preprocess(32, 160), classes=["defect"], thresholds={"defect": 0.5})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncate", "missing", "foreign"])
def test_unreadable_checkpoint_is_a_one_line_error(tmp_path, damage):
    path = tmp_path / "seg.pt"
    _save_tiny_segmenter(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        match = "cannot read checkpoint"
    elif damage == "missing":
        path.unlink()
        match = "not found"
    else:
        torch.save(create_model("resunet", base_width=4).state_dict(), path)
        match = "not an edgeseg checkpoint"
    with pytest.raises(EdgesegError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


class _Payload:
    """Pickles as a call to os.getcwd: what a code-carrying checkpoint holds."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_a_code_carrying_checkpoint_is_refused_without_advice_to_load_it_unsafely(tmp_path):
    path = tmp_path / "seg.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(EdgesegError, match=r"refused checkpoint .*seg\.pt: it holds a pickled Python object \(\w+\.getcwd\)") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message and "will likely succeed" not in message
