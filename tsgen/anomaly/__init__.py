"""Likelihood-based anomaly detection, SPOT thresholds, and detector evaluation."""
from tsgen.anomaly._detector import AnomalyDetector
from tsgen.anomaly._evaluate import event_recall, events, nab_score, nab_windows, point_scores
from tsgen.anomaly._spot import SPOT

__all__ = ["AnomalyDetector", "SPOT", "event_recall", "events", "nab_score", "nab_windows", "point_scores"]
