"""The paper's section 6 on MNIST (claims C27–C29): data (:mod:`mnist.data`), presets and
training through the library loop (:mod:`mnist.presets`, :mod:`mnist.train`), long chains
(:mod:`mnist.sample`), classifier metrics (:mod:`mnist.classifier`, :mod:`mnist.metrics`,
:mod:`mnist.evaluate`), figures (:mod:`mnist.figures`) and the one-command study
(``mnist/run_section6.py``)."""
