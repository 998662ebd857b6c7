"""Tests for emo_jax/faces/blazeface.py: anchors, decoding of planted raw outputs through the letterbox, weighted
NMS, and both real models on the drawn face of synthetic_videos.py."""
import numpy as np
import pytest

from emo_jax.faces.blazeface import BlazeFaceDetector, Letterbox, letterbox_tensor, ssd_anchors
from tests.data_pipeline.synthetic_videos import draw_face


@pytest.fixture(scope="module")
def detectors():
    return {model: BlazeFaceDetector(model) for model in ("short", "full")}


def _grid(cells: int, per_cell: int) -> np.ndarray:
    """Cell centres row by row (x fastest), each repeated per_cell times."""
    return np.array([((x + 0.5) / cells, (y + 0.5) / cells)
                     for y in range(cells) for x in range(cells) for _ in range(per_cell)])


def test_anchor_counts_and_grids():
    short = ssd_anchors(128, (8, 16, 16, 16), True)
    assert short.shape == (896, 2)
    # stride 8: 16x16 cells of 2 anchors; stride 16 (three layers): 8x8 cells of 6.
    np.testing.assert_allclose(short, np.concatenate([_grid(16, 2), _grid(8, 6)]), atol=1e-7)
    full = ssd_anchors(192, (4,), False)
    assert full.shape == (2304, 2)
    np.testing.assert_allclose(full, _grid(48, 1), atol=1e-7)
    np.testing.assert_allclose(full[[0, 1, 48]], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48], [0.5 / 48, 1.5 / 48]])


def test_names_and_input_sides(detectors):
    assert (detectors["short"].name, detectors["short"].input_side) == ("blazeface_short", 128)
    assert (detectors["full"].name, detectors["full"].input_side) == ("blazeface_full", 192)


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="'full'.*'short'"):
        BlazeFaceDetector("medium")


def test_letterbox_tensor_centres_the_image_on_black_in_minus_one_to_one():
    image = np.zeros((180, 320, 3), np.uint8)
    image[:, 160:] = 255  # right half white
    tensor, box = letterbox_tensor(image, 128)
    assert tensor.shape == (1, 128, 128, 3) and tensor.dtype == np.float32
    assert box == Letterbox(180, 320, 128, 72, 0, 28)
    np.testing.assert_array_equal(tensor[0, :28], -1.0)  # black bands above and below the 128x72 picture
    np.testing.assert_array_equal(tensor[0, 100:], -1.0)
    np.testing.assert_array_equal(tensor[0, 28:100, 64:], 1.0)
    np.testing.assert_array_equal(tensor[0, 28:100, :64], -1.0)
    tall, box = letterbox_tensor(np.full((320, 180, 3), 255, np.uint8), 192)
    assert box == Letterbox(320, 180, 108, 192, 42, 0)
    np.testing.assert_array_equal(tall[0, :, 42:150], 1.0)
    np.testing.assert_array_equal(tall[0, :, :42], -1.0)
    np.testing.assert_array_equal(tall[0, :, 150:], -1.0)


# Planted keypoints in image pixels, inside the planted boxes.
KEYPOINTS = np.array([[80, 95], [110, 96], [95, 115], [95, 130], [62, 105], [128, 104]], np.float64)
# Letterboxes worked out by hand: (model, image height, width, tensor side, scale, left, top).
LETTERBOXES = [("short", 180, 320, 128, 0.4, 0, 28),  # landscape: 128x72 inside 128x128, 28 px bands
               ("full", 320, 180, 192, 0.6, 42, 0)]  # portrait: 108x192 inside 192x192, 42 px bands


def _plant(detector, side, scale, left, top, planted):
    """Raw outputs ([A, 16], [A, 1]) holding detections {anchor: (box x0 y0 x1 y1, keypoints [6, 2], logit)}
    given in image pixels; every other anchor scores sigmoid(-10)."""
    anchors = detector.anchors.astype(np.float64) * side
    raw = np.random.default_rng(0).normal(0, 20, (len(anchors), 16))
    logits = np.full((len(anchors), 1), -10.0)
    for i, (box, keypoints, logit) in planted.items():
        to_tensor = lambda xy: np.asarray(xy, np.float64) * scale + [left, top]  # noqa: E731
        (x0, y0), (x1, y1) = to_tensor(box[:2]), to_tensor(box[2:])
        raw[i, :4] = [(x0 + x1) / 2 - anchors[i, 0], (y0 + y1) / 2 - anchors[i, 1], x1 - x0, y1 - y0]
        raw[i, 4:] = (to_tensor(keypoints) - anchors[i]).ravel()
        logits[i] = logit
    return raw[None].astype(np.float32), logits[None].astype(np.float32)


@pytest.mark.parametrize("model,height,width,side,scale,left,top", LETTERBOXES)
def test_decode_returns_the_planted_box_and_keypoints_in_image_pixels(detectors, model, height, width, side, scale,
                                                                      left, top):
    detector = detectors[model]
    box = np.array([60.0, 70.0, 130.5, 150.25])
    anchor = 700  # far from the planted box's centre: decoding must add the offsets to this anchor
    raw, logits = _plant(detector, side, scale, left, top, {anchor: (box, KEYPOINTS, 2.0)})
    boxes, found_keypoints, scores = detector.decode(raw, logits, Letterbox.fit(height, width, side))
    assert boxes.shape == (1, 4) and found_keypoints.shape == (1, 6, 2)
    np.testing.assert_allclose(boxes[0], box, atol=1e-3)
    np.testing.assert_allclose(found_keypoints[0], KEYPOINTS, atol=1e-3)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0))], rtol=1e-6)


def test_decode_clips_to_the_image_and_drops_boxes_outside_it(detectors):
    # Landscape 180x320 in the short model: the box reaches into the top band and past the right edge.
    box = np.array([280.0, -20.0, 340.0, 40.0])
    keypoints = np.tile([[300.0, -5.0]], (6, 1))
    in_band = np.array([100.0, -60.0, 150.0, -10.0])  # wholly in the black band above the picture
    planted = {300: (box, keypoints, 3.0), 600: (in_band, keypoints, 4.0)}
    raw, logits = _plant(detectors["short"], 128, 0.4, 0, 28, planted)
    boxes, found_keypoints, _ = detectors["short"].decode(raw, logits, Letterbox.fit(180, 320, 128))
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0], [280, 0, 320, 40], atol=1e-3)
    np.testing.assert_allclose(found_keypoints[0], np.tile([[300.0, 0.0]], (6, 1)), atol=1e-3)


def test_weighted_nms_merges_overlaps_into_their_score_weighted_mean(detectors):
    kp = lambda dx, dy=0: KEYPOINTS + [dx, dy]  # noqa: E731
    a = np.array([60.0, 70, 130, 150])
    b = a + [0.48 * 70, 0, 0.48 * 70, 0]  # IoU with a: 0.52 / 1.48 = 0.35
    far = np.array([220.0, 20, 280, 90])
    near_miss = a + [0.55 * 70, 0, 0.55 * 70, 0]  # IoU with a: 0.45 / 1.55 = 0.29
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    planted = {100: (a, kp(0), logit(0.9)), 400: (b, kp(10), logit(0.6)), 800: (far, kp(160, -60), logit(0.7))}
    raw, logits = _plant(detectors["short"], 128, 0.4, 0, 28, planted)
    boxes, keypoints, scores = detectors["short"].decode(raw, logits, Letterbox.fit(180, 320, 128))
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-5)
    np.testing.assert_allclose(boxes, [(0.9 * a + 0.6 * b) / 1.5, far], atol=1e-3)
    np.testing.assert_allclose(keypoints, [(0.9 * kp(0) + 0.6 * kp(10)) / 1.5, kp(160, -60)], atol=1e-3)

    planted = {100: (a, kp(0), logit(0.9)), 400: (near_miss, kp(10), logit(0.6))}
    raw, logits = _plant(detectors["short"], 128, 0.4, 0, 28, planted)
    boxes, _, scores = detectors["short"].decode(raw, logits, Letterbox.fit(180, 320, 128))
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-5)
    np.testing.assert_allclose(boxes, [a, near_miss], atol=1e-3)


# (models, image height, width, face centre x, y, half-width): square and non-square images, several places and
# sizes; the 16:9 frame's small face is for the full-range model only.
FACES = [
    (("short", "full"), 128, 128, 64, 64, 24),
    (("short", "full"), 128, 128, 40, 80, 16),
    (("short", "full"), 256, 256, 150, 110, 60),
    (("short", "full"), 180, 320, 100, 90, 30),
    (("short", "full"), 320, 180, 90, 200, 30),
    (("short", "full"), 360, 640, 420, 170, 70),
    (("full",), 360, 640, 320, 180, 25),
]


@pytest.mark.parametrize("model", ["short", "full"])
def test_real_model_finds_the_drawn_face(detectors, model):
    detector = detectors[model]
    for models, height, width, cx, cy, s in FACES:
        if model not in models:
            continue
        image = np.full((height, width, 3), 90, np.uint8)
        draw_face(image, cx, cy, s)
        boxes, keypoints, scores = detector.detect(image)
        case = (model, height, width, cx, cy, s)
        assert len(boxes) == 1 and scores[0] > 0.6, (case, scores)
        x0, y0, x1, y1 = boxes[0]
        assert x0 < cx < x1 and y0 < cy < y1, (case, boxes)
        assert 1.5 * s < x1 - x0 < 3.5 * s and 1.5 * s < y1 - y0 < 3.5 * s, (case, boxes)
        (rx, ry), (lx, ly) = keypoints[0, 0], keypoints[0, 1]
        # The person's right eye is on the image's left; the drawn eyes are at cx -+ 0.42 s, cy - 0.3 s.
        assert rx < cx < lx and abs(rx - (cx - 0.42 * s)) < 0.2 * s and abs(lx - (cx + 0.42 * s)) < 0.2 * s, case
        assert abs(ry - (cy - 0.3 * s)) < 0.3 * s and abs(ly - (cy - 0.3 * s)) < 0.3 * s, case
        np.testing.assert_array_equal(detector(image), boxes)
    assert len(detector(np.full((180, 320, 3), 90, np.uint8))) == 0
