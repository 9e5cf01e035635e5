"""Jobs: the one loop txt2img and img2img share (run.py), where a job starts (start.py: noise or an init image),
img2img's preparation of the init image and mask (img2img.py), the request resolved against one settings
snapshot (resolve.py), and the decode to 8-bit pixels (decode.py)."""
from .run import GeneratedImage, Interrupted, JobControl, JobResult, generate
from .start import FromImage, FromNoise

__all__ = ["FromImage", "FromNoise", "GeneratedImage", "Interrupted", "JobControl", "JobResult", "generate"]
