"""Detections drawn on their image, for `lightnets detect predict` and for looking at results by eye."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .decode import Detections


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class (golden-ratio steps around the hue circle)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.9, 0.85)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_detections(image: np.ndarray, detections: Detections, class_names: Sequence[str],
                    show_labels: bool = True) -> Image.Image:
    """``image`` (H, W, 3) uint8 with each box outlined in its class colour and, with ``show_labels``,
    captioned ``name score`` (leave it off for pages with thousands of characters)."""
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 50))
    for box, score, label in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                 detections.labels.tolist(), strict=True):
        colour = class_colour(int(label))
        draw.rectangle(box, outline=colour, width=max(1, min(canvas.size) // 400))
        if show_labels:
            caption = f"{class_names[int(label)]} {score:.2f}"
            left, top, right, bottom = draw.textbbox((box[0], box[1]), caption, font=font, anchor="lb")
            draw.rectangle((left, top, right, bottom), fill=colour)
            draw.text((box[0], box[1]), caption, fill=(255, 255, 255), font=font, anchor="lb")
    return canvas
