"""TensorRT version guards as pure functions of the version string (no TensorRT needed)."""
from dataclasses import replace
from pathlib import Path

import pytest

from edgeseg.edge import trt_compat
from edgeseg.edge.card import Artifact
from edgeseg.errors import EdgesegError

JETPACK5, JETPACK6_0, JETPACK6_1, DGPU11 = "8.5.2.2", "8.6.2.3", "10.3.0.30", "11.4.0.11"


@pytest.mark.parametrize(
    "text, parsed",
    [("8.5.2.2", (8, 5, 2)), ("10.3.0", (10, 3, 0)), ("11.4", (11, 4, 0)), ("10.0.1.post1", (10, 0, 1))],
)
def test_parse_version(text, parsed):
    assert trt_compat.parse_version(text) == parsed


def test_too_old_tensorrt_is_refused():
    with pytest.raises(EdgesegError, match="8.5 or newer"):
        trt_compat.features("8.4.3.1")


def test_features_per_platform():
    jp5, jp6, jp61, dgpu11 = (trt_compat.features(v) for v in (JETPACK5, JETPACK6_0, JETPACK6_1, DGPU11))
    assert jp5.weak_typing and jp5.implicit_int8 and not jp5.version_compatible and not jp5.hardware_compatible
    assert jp6.version_compatible and jp6.hardware_compatible and jp6.implicit_int8
    assert jp61.weak_typing and jp61.implicit_int8 and jp61.platform_queries
    assert not dgpu11.weak_typing and not dgpu11.implicit_int8 and not dgpu11.platform_queries


@pytest.mark.parametrize("version", [JETPACK5, JETPACK6_0, JETPACK6_1])
def test_fp16_is_the_builder_flag_up_to_10(version):
    plan = trt_compat.plan_precision("fp16", trt_compat.features(version))
    assert plan.builder_flags == ("FP16",) and plan.onnx == "fp32" and not plan.strongly_typed


def test_fp16_on_11_is_the_fp16_onnx_strongly_typed():
    plan = trt_compat.plan_precision("fp16", trt_compat.features(DGPU11))
    assert plan.builder_flags == () and plan.onnx == "fp16" and plan.strongly_typed


@pytest.mark.parametrize("version", [JETPACK5, JETPACK6_1, DGPU11])
def test_int8_uses_the_qdq_model_on_every_version(version):
    feats = trt_compat.features(version)
    plan = trt_compat.plan_precision("int8", feats, "qdq")
    assert plan.onnx == "qdq" and not plan.implicit_calibration
    # weakly typed networks still need the INT8 flag for their Q/DQ layers; 11.x needs none
    assert plan.builder_flags == (("INT8",) if feats.weak_typing else ())


@pytest.mark.parametrize("version", [JETPACK5, JETPACK6_0, JETPACK6_1])
def test_implicit_int8_up_to_10(version):
    plan = trt_compat.plan_precision("int8", trt_compat.features(version), "implicit")
    assert plan.implicit_calibration and plan.onnx == "fp32" and plan.builder_flags == ("INT8",)


def test_implicit_int8_on_11_says_there_is_no_such_path():
    with pytest.raises(EdgesegError, match="no implicit INT8") as info:
        trt_compat.plan_precision("int8", trt_compat.features(DGPU11), "implicit")
    assert "--calibration qdq" in str(info.value)


@pytest.mark.parametrize(
    "precision, calibration, message",
    [("bf16", "qdq", "unknown precision"), ("int8", "percentile", "unknown calibration"), ("fp16", "implicit", "only applies")],
)
def test_bad_precision_requests(precision, calibration, message):
    with pytest.raises(EdgesegError, match=message):
        trt_compat.plan_precision(precision, trt_compat.features(JETPACK6_1), calibration)


def test_portability_options_unavailable_on_jetpack5():
    feats = trt_compat.features(JETPACK5)
    with pytest.raises(EdgesegError, match="version-compatible.*8.6"):
        trt_compat.check_portability_options(feats, True, False, "8.7")
    with pytest.raises(EdgesegError, match="hardware-compatible.*8.6"):
        trt_compat.check_portability_options(feats, False, True, "8.7")
    trt_compat.check_portability_options(feats, False, False, "7.2")


def test_hardware_compatible_needs_ampere():
    feats = trt_compat.features(JETPACK6_1)
    trt_compat.check_portability_options(feats, True, True, "8.7")
    with pytest.raises(EdgesegError, match="Ampere"):
        trt_compat.check_portability_options(feats, False, True, "7.5")


ENGINE = Artifact(format="tensorrt", precision="fp16", tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", build_flags=["fp16"])


def test_engine_matches_the_machine_it_was_built_on():
    assert trt_compat.engine_mismatch(ENGINE, "10.3.0.30", "Orin", "8.7") is None


@pytest.mark.parametrize(
    "trt, gpu, cc, expected",
    [
        ("10.3.0.31", "Orin", "8.7", "built with TensorRT 10.3.0.30"),
        ("10.3.0.30", "NVIDIA GeForce RTX 3090", "8.6", "built for Orin"),
        ("10.3.0.30", "Orin", "8.6", "compute 8.7"),
        ("10.3.0.30", None, None, "no CUDA GPU"),
    ],
)
def test_engine_mismatch_names_what_differs(trt, gpu, cc, expected):
    assert expected in trt_compat.engine_mismatch(ENGINE, trt, gpu, cc)


def test_version_compatible_engine_loads_on_newer_tensorrt_only():
    engine = replace(ENGINE, build_flags=["fp16", "version_compatible"])
    assert trt_compat.engine_mismatch(engine, "11.4.0.11", "Orin", "8.7") is None
    assert "version-compatible from TensorRT 10.3.0.30" in trt_compat.engine_mismatch(engine, "10.0.1", "Orin", "8.7")


@pytest.mark.parametrize(
    "built, running, loads",
    [("8.6.1", "10.3.0", True), ("8.6.1", "11.0.0.114", False), ("10.3.0", "11.4.0.106", True), ("10.16.1", "12.0.0", False)],
)
def test_version_compatible_engines_cross_one_supported_major_only(built, running, loads):
    """TensorRT supports 8.x -> 10.x and 10.x -> 11.x, never 8.x -> 11.x."""
    engine = replace(ENGINE, tensorrt_version=built, build_flags=["version_compatible"])
    reason = trt_compat.engine_mismatch(engine, running, "Orin", "8.7")
    assert (reason is None) == loads, reason
    if not loads:
        newest = trt_compat.NEWEST_RUNTIME_MAJOR[int(built.split(".")[0])]
        assert f"load on TensorRT {newest}.x at the newest" in reason


def test_an_8x_engine_on_11x_is_refused_with_the_rebuild_line(tmp_path):
    """The backend's one line: what is wrong and the command that rebuilds it (before TensorRT loads)."""
    import edgeseg.assets
    from edgeseg.edge.backends.tensorrt import rebuild_hint
    from edgeseg.edge.card import ModelCard, read_card

    data = read_card(Path(edgeseg.assets.__file__).parent / "segmenter.onnx").to_dict()
    data["artifact"] = replace(ENGINE, tensorrt_version="8.6.1", build_flags=["fp16", "version_compatible"]).to_dict()
    data["source"] = dict(data["source"], onnx="segmenter.onnx")
    card = ModelCard.from_dict(data)
    reason = trt_compat.engine_mismatch(card.artifact, "11.4.0.106", "Orin", "8.7")
    assert "8.x load on TensorRT 10.x at the newest" in reason
    assert rebuild_hint(card) == "rebuild it here: edgeseg build-engine segmenter.onnx --precision fp16"


def test_hardware_compatible_engine_loads_on_any_ampere_plus_gpu():
    engine = replace(ENGINE, build_flags=["hardware_compatible"], gpu_name="NVIDIA A100", compute_capability="8.0")
    assert trt_compat.engine_mismatch(engine, "10.3.0.30", "NVIDIA H100 80GB HBM3", "9.0") is None
    assert "Ampere" in trt_compat.engine_mismatch(engine, "10.3.0.30", "Tesla T4", "7.5")


def test_card_build_flags():
    plan = trt_compat.plan_precision("fp16", trt_compat.features(DGPU11))
    assert trt_compat.builder_flag_names(plan, ["version_compatible"]) == ["strongly_typed", "version_compatible"]
    plan = trt_compat.plan_precision("int8", trt_compat.features(JETPACK5), "implicit")
    assert trt_compat.builder_flag_names(plan, []) == ["int8"]


AGX = trt_compat.Platform("aarch64", "NVIDIA Jetson AGX Orin Developer Kit", 16)
JETSON_ENGINE = replace(ENGINE, **AGX.card_fields())


@pytest.mark.parametrize(
    "here, expected",
    [
        (AGX, None),
        (trt_compat.Platform("x86_64", None, 16), "it was built on aarch64, this machine is x86_64"),
        (trt_compat.Platform("aarch64", "NVIDIA Jetson Orin NX Developer Kit", 8),
         "built on NVIDIA Jetson AGX Orin Developer Kit, this is NVIDIA Jetson Orin NX"),
        (trt_compat.Platform("aarch64", "NVIDIA Jetson AGX Orin Developer Kit", 14), "built for a GPU with 16 SMs, this one has 14"),
    ],
)
def test_a_plan_from_another_platform_is_refused_in_one_line(here, expected):
    """Orin modules all report compute 8.7: the platform, module and SM count tell them apart."""
    reason = trt_compat.engine_mismatch(JETSON_ENGINE, "10.3.0.30", "Orin", "8.7", here)
    assert reason is None if expected is None else expected in reason and "\n" not in reason
    assert trt_compat.engine_mismatch(ENGINE, "10.3.0.30", "Orin", "8.7", here) is None  # cards from before these fields


def test_hardware_compatible_plans_are_refused_on_jetson():
    dgpu = replace(ENGINE, build_flags=["hardware_compatible"], **trt_compat.Platform("aarch64", None, 132).card_fields())
    assert trt_compat.engine_mismatch(dgpu, "10.3.0.30", "NVIDIA GH200", "9.0", trt_compat.Platform("aarch64", None, 80)) is None
    assert "not supported on NVIDIA Jetson AGX Orin" in trt_compat.engine_mismatch(dgpu, "10.3.0.30", "Orin", "8.7", AGX)
    with pytest.raises(EdgesegError, match="discrete-GPU feature"):
        trt_compat.check_portability_options(trt_compat.features("10.3.0"), False, True, "8.7", AGX.jetson)


def test_default_workspace_comes_from_the_device_memory():
    assert trt_compat.default_workspace_mib(8 << 30, integrated=True) == 2048  # 8 GB Orin: a quarter of shared RAM
    assert trt_compat.default_workspace_mib(16 << 30, integrated=False) == 8192
