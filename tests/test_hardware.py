from edgecxr.hardware import cpu_info, jetson_info, parse_nvpmodel

CPUINFO_X86 = """processor : 0
model name : Intel(R) Xeon(R) Platinum 8480+
flags : fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8
"""
CPUINFO_ARM = """processor : 0
Features : fp asimd evtstrm aes asimddp
"""


def test_cpu_isa_x86():
    info = cpu_info(CPUINFO_X86)
    assert info["model"].startswith("Intel(R) Xeon")
    assert {"AVX2", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16", "AMX", "AMX-INT8"} <= set(info["isa"])


def test_cpu_isa_arm():
    assert set(cpu_info(CPUINFO_ARM)["isa"]) == {"NEON", "NEON dot-product"}


def test_jetson_detection(tmp_path):
    assert jetson_info(tmp_path) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 1\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    info = jetson_info(tmp_path)
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["l4t"].startswith("# R36")


def test_parse_nvpmodel():
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == "MAXN"
    assert parse_nvpmodel("garbage") is None
