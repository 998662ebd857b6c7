"""The framing rule shared by emo-prepare and emo-generate: crop window, boxes in crop pixels, face mask."""
import numpy as np

from data_pipeline.crop import crop_window, frame_face, union_mask


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(first x, last x, first y, last y) of the mask's pixels."""
    ys, xs = np.nonzero(mask)
    return xs.min(), xs.max(), ys.min(), ys.max()


def test_a_still_face_fills_one_over_expand_of_its_window():
    box = np.array([[50, 20, 70, 44]], np.float32)  # 20 x 24: the longer side sets the scale
    np.testing.assert_array_equal(crop_window(box, 200, 100, expand=2.0), [36, 8, 84, 56])
    # Pushed inside the frame at a border, and never larger than the frame's shorter side.
    np.testing.assert_array_equal(crop_window(box - [45, 0, 45, 0], 200, 100, expand=2.0), [0, 8, 48, 56])
    np.testing.assert_array_equal(crop_window(box, 200, 100, expand=6.0), [10, 0, 110, 100])


def test_a_moving_face_widens_the_window_by_its_track():
    track = np.array([[50, 20, 70, 44], [60, 20, 80, 44]], np.float32)  # moves 10 px right
    # The union is 30 x 24; the margin stays one median face side (24): a 54 px window about (65, 32).
    np.testing.assert_array_equal(crop_window(track, 200, 100, expand=2.0), [38, 5, 92, 59])


def test_framing_maps_boxes_into_the_resized_crop_and_masks_them():
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:44, 50:70] = 255
    framing = frame_face(np.array([[50, 20, 70, 44]], np.float32), 200, 100, expand=2.0, size=96)
    np.testing.assert_array_equal(framing.crop, [36, 8, 84, 56])
    np.testing.assert_allclose(framing.boxes_T4, [[28, 24, 68, 72]])  # 48 px window -> 96 px: scale 2
    frame = framing.frame(image)
    assert frame.shape == (96, 96, 3) and frame[48, 48].min() == 255 and frame[48, 10].max() == 0
    assert _bounds(framing.mask()) == (28, 67, 24, 71)


def test_mask_grows_each_box_about_its_centre_and_stays_in_the_frame():
    boxes = np.array([[10.5, 10, 20, 20], [0, 25, 8, 31]], np.float32)
    np.testing.assert_array_equal(union_mask(boxes, 32, grow=1.0)[10:20, 10:20], 1)
    assert union_mask(boxes, 32).sum() == 10 * 10 + 8 * 6  # grow 1: exactly the pixels the boxes touch
    assert _bounds(union_mask(boxes[:1], 32, grow=2.0)) == (5, 24, 5, 24)  # x 5.75..24.75, y 5..25
    assert _bounds(union_mask(boxes[1:], 32, grow=2.0)) == (0, 11, 22, 31)  # x -4..12, y 22..34: cut at 0 and 32
    np.testing.assert_array_equal(union_mask(boxes, 32, grow=2.0),
                                  union_mask(boxes[:1], 32, grow=2.0) | union_mask(boxes[1:], 32, grow=2.0))
