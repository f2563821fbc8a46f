"""deploycomp: a hardware-aware deployment compiler for ONNX models.

    import deploycomp
    runner = deploycomp.build("model.onnx", "dist/model-host", target="host", precision="fp16",
                              inputs={"images": (1, 3, 320, 320)})
    outputs = deploycomp.load("dist/model-host").run({"images": x})
"""

from deploycomp.api import build, load, optimize
from deploycomp.errors import DeployError

__version__ = "0.1.0"

__all__ = ["DeployError", "__version__", "build", "load", "optimize"]
