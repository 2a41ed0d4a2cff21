"""The numpy / scikit-learn stages of I2X (no torch): prototypes (Eq. 3), intensity and
containment (Eq. 4), dynamics (Eq. 5-8), structured explanations (§2.6) and the statistics of
guided fine-tuning (§3.5)."""
