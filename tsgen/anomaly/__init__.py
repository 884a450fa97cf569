"""Likelihood-based anomaly detection, SPOT thresholds, and detector evaluation (NAB among it)."""
from tsgen.anomaly._bocpd import BOCPDResult, bocpd
from tsgen.anomaly._detector import AnomalyDetector
from tsgen.anomaly._evaluate import event_recall, events, point_scores
from tsgen.anomaly._likelihood import AnomalyLikelihood
from tsgen.anomaly._nab import NABResult, nab_evaluate, nab_score, nab_windows, read_nab_windows
from tsgen.anomaly._spot import SPOT

__all__ = ["AnomalyDetector", "AnomalyLikelihood", "BOCPDResult", "NABResult", "SPOT", "bocpd", "event_recall",
           "events", "nab_evaluate", "nab_score", "nab_windows", "point_scores", "read_nab_windows"]
