"""Grad-CAM for registry backbones and fine-tuned classifiers, its deletion check and an explorer: written in lesson 08
(`nbs/08_evaluate.ipynb`, exported to `tl_course.evaluate`) and importable from here, as `tl_course.explain`."""
from .evaluate import gradcam, upsample, overlay_figure, delete_pixels, deletion_check, gradcam_explorer # noqa: F401

__all__ = ['gradcam', 'upsample', 'overlay_figure', 'delete_pixels', 'deletion_check', 'gradcam_explorer']
