"""Building and running a TensorRT engine on the machine that has the GPU.

Nothing here runs in CI (no GPU); the call sequence of :func:`build_engine` is tested
against a recording fake of the ``tensorrt`` module. Two rules keep a GPU-less machine
safe: the GPU is detected through the CUDA runtime's ``cudaGetDeviceCount`` (which
returns an error code without a driver), and no TensorRT ``Runtime`` or ``Builder`` is
created before that check passed, because creating one without a driver can crash the
process instead of raising.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from deploycomp.backends.tensorrt.plan import BuildPlan, version_ok
from deploycomp.errors import BackendUnavailable, UnsupportedError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TensorRTRunner", "build_engine", "cuda_runtime", "gpu_info", "require_engine_builder"]


def cuda_runtime():
    """cuda-python's runtime module (``cuda.bindings.runtime``, or the older ``cuda.cudart``)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def gpu_info(cudart=None) -> dict[str, Any] | None:
    """Name, compute capability, driver and runtime versions of GPU 0; None without a GPU."""
    cudart = cudart or cuda_runtime()
    if cudart is None:
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count < 1:
            return None
        err, props = cudart.cudaGetDeviceProperties(0)
        _, driver = cudart.cudaDriverGetVersion()
        _, runtime = cudart.cudaRuntimeGetVersion()
    except Exception:  # noqa: BLE001 - any failure of the probe means "no usable GPU"
        return None
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name, "compute_capability": f"{props.major}.{props.minor}", "count": int(count),
            "multiprocessors": int(getattr(props, "multiProcessorCount", 0)),
            "memory_gb": round(int(getattr(props, "totalGlobalMem", 0)) / 2**30, 1),
            "driver_version": int(driver), "cuda_runtime_version": int(runtime)}


def require_engine_builder(trt=None, cudart=None):
    """(tensorrt module, GPU info) or a one-line BackendUnavailable saying what is missing."""
    if trt is None:
        try:
            import tensorrt as trt  # noqa: PLC0415 - optional, heavy
        except (ImportError, OSError):
            raise BackendUnavailable(
                "building a TensorRT engine needs the tensorrt package and an NVIDIA GPU "
                '(pip install "deploycomp[tensorrt]" on the device); this bundle\'s ONNX and build plan are ready'
            ) from None
    info = gpu_info(cudart)
    if info is None:
        raise BackendUnavailable("building a TensorRT engine needs an NVIDIA GPU with its driver; none found "
                                 "(cudaGetDeviceCount reports no device)")
    return trt, info


RTX_VERSIONS = ">=1.0,<2"
"""TensorRT for RTX (``tensorrt_rtx`` on PyPI), whose builder runs without a GPU: CI runs
the engine step's real builder calls with it (the plan's range is for TensorRT 10/11 on
the device)."""


def build_engine(bundle: Path, plan: BuildPlan, trt, progress=lambda msg: None) -> dict[str, Any]:
    """Build ``plan.engine`` in ``bundle`` from ``plan.onnx``; returns what to record.

    ``trt`` is the ``tensorrt`` module on the device; ``tensorrt_rtx`` is accepted too:
    its builder makes a GPU-agnostic (ahead-of-time) engine without a GPU, which is how
    this code's calls are exercised for real where no NVIDIA GPU is (tests, CI)."""
    rtx = getattr(trt, "__name__", "") == "tensorrt_rtx"
    wanted = RTX_VERSIONS if rtx else plan.tensorrt_versions
    if not version_ok(trt.__version__, wanted):
        raise UnsupportedError(f"TensorRT {trt.__version__} here; this bundle's plan needs {wanted}")
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle / plan.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedError(f"TensorRT's parser rejects {plan.onnx}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    config.builder_optimization_level = plan.builder_optimization_level
    for shapes in plan.profiles:
        profile = builder.create_optimization_profile()
        for name, dims in shapes.items():
            profile.set_shape(name, tuple(dims["min"]), tuple(dims["opt"]), tuple(dims["max"]))
        config.add_optimization_profile(profile)
    dla_core, notes = plan.dla_core, []
    if dla_core is not None and builder.num_DLA_cores <= dla_core:
        # a family bundle plans the DLA for the members that have one (Orin NX, AGX Orin);
        # the Orin Nano has none, so there the engine is the GPU's
        notes.append(f"the plan asks for DLA core {dla_core}; this device has {builder.num_DLA_cores} DLA core(s): "
                     "built for the GPU")
        dla_core = None
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_path = bundle / plan.timing_cache
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    progress("build engine")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UnsupportedError("TensorRT could not build an engine from this bundle (see its log above)")
    tmp = bundle / f".{plan.engine}.tmp"
    tmp.write_bytes(bytes(serialized))
    tmp.replace(bundle / plan.engine)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt_version": trt.__version__, "builder": getattr(trt, "__name__", "tensorrt"),
            "engine": plan.engine, "timing_cache": plan.timing_cache, "dla_core": dla_core, "notes": notes,
            "build_seconds": round(time.perf_counter() - started, 2)}


class TensorRTRunner:
    """Runs ``engine`` on GPU 0; device buffers through cuda-python (no pycuda)."""

    def __init__(self, engine_path: Path, trt=None, cudart=None):
        trt, info = require_engine_builder(trt, cudart)
        self.cudart = cudart or cuda_runtime()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise UnsupportedError(f"{engine_path}: TensorRT cannot load this engine (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.trt = trt
        _, self.stream = self.cudart.cudaStreamCreate()
        self.info = {"runtime": "tensorrt", "runtime_version": trt.__version__, "device": info["name"],
                     "compute_capability": info["compute_capability"], "executed_precision": "engine"}

    def _call(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise UnsupportedError(f"CUDA error {err}")
        return rest[0] if rest else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        rt, copy = self.cudart, self.cudart.cudaMemcpyKind
        buffers, hosts = [], {}
        try:
            for name in self.inputs:
                host = np.ascontiguousarray(feeds[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
                self.context.set_input_shape(name, host.shape)
                ptr = self._call(rt.cudaMalloc(host.nbytes))
                buffers.append(ptr)
                self._call(rt.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, copy.cudaMemcpyHostToDevice))
                self.context.set_tensor_address(name, ptr)
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                hosts[name] = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
                ptr = self._call(rt.cudaMalloc(max(hosts[name].nbytes, 1)))
                buffers.append(ptr)
                self.context.set_tensor_address(name, ptr)
            if not self.context.execute_async_v3(self.stream):
                raise UnsupportedError("TensorRT execution failed")
            self._call(rt.cudaStreamSynchronize(self.stream))
            for name, ptr in zip(self.outputs, buffers[len(self.inputs):]):
                self._call(rt.cudaMemcpy(hosts[name].ctypes.data, ptr, hosts[name].nbytes, copy.cudaMemcpyDeviceToHost))
        finally:
            for ptr in buffers:
                rt.cudaFree(ptr)
        return hosts
