"""VOC07 11-point mAP against examples worked out by hand.

Boxes are [ymin, xmin, ymax, xmax] in VOC pixel coordinates (1-based,
inclusive): [1, 1, 10, 10] covers 10 x 10 = 100 pixels.
"""
import numpy as np
import pytest

from mtssl_tf.evaluation.voc_eval import (evaluate_class, per_class_ap,
                                          voc07_ap, voc07_map, voc_iou)


def _gt(boxes, classes, difficult=None):
  return {"boxes": boxes, "classes": classes,
          "difficult": difficult or [False] * len(classes)}


def _det(boxes, classes, scores):
  return {"boxes": boxes, "classes": classes, "scores": scores}


def test_iou_uses_the_plus_one_pixel_convention():
  # Rows 6..10 of columns 1..10 overlap: 5 x 10 = 50 pixels; each box has 100,
  # union 150 -> 1/3. Without the +1 it would be (4 * 9) / (81 + 81 - 36).
  iou = voc_iou([1, 1, 10, 10], np.array([[6, 1, 15, 10], [20, 20, 30, 30],
                                          [1, 1, 10, 10]]))
  np.testing.assert_allclose(iou, [1 / 3, 0.0, 1.0])
  # Boxes touching at one pixel column overlap by 1 x 10 = 10 pixels.
  np.testing.assert_allclose(voc_iou([1, 1, 10, 10], [[1, 10, 10, 19]]),
                             [10 / 190])
  # Adjacent boxes (columns 1..10 and 11..20) do not overlap.
  np.testing.assert_allclose(voc_iou([1, 1, 10, 10], [[1, 11, 10, 20]]), [0])


def test_one_class_three_boxes_five_detections():
  # Image A: G1 = [1,1,10,10], G2 = [21,21,30,30]; image B: G3 = [1,1,20,20].
  gts = [_gt([[1, 1, 10, 10], [21, 21, 30, 30]], [0, 0]),
         _gt([[1, 1, 20, 20]], [0])]
  # Given out of score order on purpose.
  dets = [
      _det([[21, 26, 30, 35],    # d4 0.6: G2 shifted 5 columns:
            [1, 1, 10, 10],      #   50 / (100 + 100 - 50) = 1/3 < 0.5 -> FP
            [50, 50, 60, 60],    # d1 0.9: G1 exactly -> TP
            [1, 1, 10, 10]],     # d2 0.8: nothing there -> FP
           [0, 0, 0, 0],         # d3 0.7: G1 again, already detected -> FP
           [0.6, 0.9, 0.8, 0.7]),
      _det([[1, 1, 20, 20]], [0], [0.5]),  # d5 0.5: G3 exactly -> TP
  ]
  # Score order d1..d5: TP FP FP FP TP, npos = 3.
  # cumTP     1    1    1    1    2
  # cumFP     0    1    2    3    3
  # precision 1    1/2  1/3  1/4  2/5
  # recall    1/3  1/3  1/3  1/3  2/3
  # 11 points: t = 0, .1, .2, .3 -> every recall (1/3 or 2/3) >= t, max
  # precision 1; t = .4, .5, .6 -> only recall 2/3, precision 2/5;
  # t = .7 .. 1 -> no recall reaches t, 0.
  # AP = (4 * 1 + 3 * 0.4 + 4 * 0) / 11 = 5.2 / 11.
  r = evaluate_class(dets, gts, 0)
  np.testing.assert_array_equal(r.tp, [1, 0, 0, 0, 1])
  np.testing.assert_array_equal(r.fp, [0, 1, 1, 1, 0])
  np.testing.assert_allclose(r.precision, [1, 1 / 2, 1 / 3, 1 / 4, 2 / 5])
  np.testing.assert_allclose(r.recall, [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
  assert r.npos == 3
  assert r.ap == pytest.approx(5.2 / 11)
  result = voc07_map(dets, gts, num_classes=1)
  assert result.map == pytest.approx(5.2 / 11)


def test_difficult_box_and_two_classes():
  # Image A: class 0 G1 = [1,1,10,10], class 0 G2 = [31,31,40,40] difficult.
  # Image B: class 1 G3 = [1,1,10,10]. Class 2 has no ground truth.
  gts = [_gt([[1, 1, 10, 10], [31, 31, 40, 40]], [0, 0], [False, True]),
         _gt([[1, 1, 10, 10]], [1])]
  dets = [
      _det([[31, 31, 40, 40],   # class 0, 0.9: on the difficult G2 -> ignored
            [1, 1, 10, 5],      # class 0, 0.8: half of G1, 50 / 100 = 0.5
                                #   (>= 0.5 with the +1 rule; 36/81 without)
                                #   -> TP
            [1, 1, 10, 10],     # class 1, 0.6: no class-1 box in A -> FP
            [5, 5, 8, 8]],      # class 2, 0.99: class without ground truth
           [0, 0, 1, 2], [0.9, 0.8, 0.6, 0.99]),
      _det([[60, 60, 70, 70],   # class 0, 0.7: no class-0 box in B -> FP
            [1, 1, 10, 10]],    # class 1, 0.4: G3 exactly -> TP
           [0, 1], [0.7, 0.4]),
  ]
  # Class 0 (npos = 1: the difficult box does not count):
  #   order: ignored, TP, FP; cumTP 0 1 1, cumFP 0 0 1;
  #   precision (0/0 -> 0) 1 1/2, recall 0 1 1 -> max precision at every t is
  #   1 -> AP = 1.
  # Class 1 (npos = 1): order FP (0.6), TP (0.4); precision 0 1/2, recall
  #   0 1 -> every t: max(1/2) -> AP = 1/2.
  # mAP over the classes with ground truth: (1 + 1/2) / 2 = 0.75.
  result = voc07_map(dets, gts, num_classes=3)
  c0 = result.per_class[0]
  np.testing.assert_array_equal(c0.tp, [0, 1, 0])
  np.testing.assert_array_equal(c0.fp, [0, 0, 1])
  assert c0.npos == 1
  np.testing.assert_allclose(result.ap[:2], [1.0, 0.5])
  assert np.isnan(result.ap[2])
  assert result.map == pytest.approx(0.75)
  assert per_class_ap(result, ["a", "b", "c"]) == {"a": 1.0, "b": 0.5}


def test_duplicate_takes_the_best_box_and_does_not_fall_back():
  # G1 = [1,1,10,10] and G2 = [1,3,10,12] overlap; the detection [1,2,10,11]
  # has IoU 90/110 with each (first wins the tie: G1). Twice: the second one
  # again picks G1 (already detected) -> FP, even though G2 is free with
  # IoU >= 0.5: the devkit rule.
  gts = [_gt([[1, 1, 10, 10], [1, 3, 10, 12]], [0, 0])]
  dets = [_det([[1, 2, 10, 11], [1, 2, 10, 11]], [0, 0], [0.9, 0.8])]
  r = evaluate_class(dets, gts, 0)
  np.testing.assert_array_equal(r.tp, [1, 0])
  np.testing.assert_array_equal(r.fp, [0, 1])
  # recall 1/2 at both; precision 1, 1/2 -> t <= .5: 1; t > .5: 0 -> 6/11.
  assert r.ap == pytest.approx(6 / 11)


def test_eleven_point_ap_counts_recall_exactly_on_a_tenth():
  # Recall 0.3 (3/10 in floating point) must reach the t = 0.3 point.
  recall = np.cumsum([1, 1, 1]) / 10.0
  assert voc07_ap(recall, [1.0, 1.0, 1.0]) == pytest.approx(4 / 11)
  assert voc07_ap([], []) == 0.0


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="empty"):
    voc07_map([], [], num_classes=20)
  gts = [_gt([[1, 1, 10, 10]], [0])]
  with pytest.raises(ValueError, match="1 ground-truth images"):
    voc07_map([], gts, num_classes=1)
  with pytest.raises(ValueError, match="differ in length"):
    voc07_map([_det([[1, 1, 2, 2]], [0, 1], [0.5])], gts, num_classes=1)
  with pytest.raises(ValueError, match="no 'scores'"):
    voc07_map([{"boxes": [], "classes": []}], gts, num_classes=1)
  only_difficult = [_gt([[1, 1, 10, 10]], [0], [True])]
  with pytest.raises(ValueError, match="non-difficult"):
    voc07_map([_det([], [], [])], only_difficult, num_classes=1)
