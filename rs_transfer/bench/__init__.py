"""Measuring: FLOPs (:mod:`.flops`, used by ``inspect``, the scaling study and cost estimates) and the speed
benchmarks behind ``rs-transfer benchmark`` (:mod:`.backbone`, :mod:`.input`; video input: ``rs_transfer.video``).
Every speed figure is a ratio against a reference measured in the same run."""
