"""digits: section 6 of the paper on 8×8 digits, with likelihoods (``python -m digits``)."""
