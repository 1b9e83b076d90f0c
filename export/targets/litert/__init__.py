"""LiteRT (.tflite) for Android: fp32, fp16 weights and int8 from the inference form.

What a target registry (issue 15) needs to know about LiteRT, in one place; today's
hook-up lines (marked "issue 16") in ``export/options.py``, ``export/builders.py``,
``runtimes/base.py``, ``runtimes/registry.py`` and ``bench/cli.py`` read or repeat these.
The build itself: ``build.build_litert(ctx, path)``; options checked up front:
``convert.check_litert_options``; the runner: ``partialnet.runtimes.litert.LiteRTRunner``.
"""

NAME = "litert"  # the target's and the runtime's name
SUFFIX = ".tflite"
EXTRA = "litert"  # pip install 'partialnet-export[litert]' (not in [all]: README, LiteRT)
# (module, purpose) the export needs; the quantizer only for fp16 and int8.
SDKS = (("litert_torch", "LiteRT export"), ("ai_edge_litert", "LiteRT export"))
QUANTIZER_SDK = ("ai_edge_quantizer", "LiteRT fp16/int8")
FIXED_BATCH = True  # --dynamic-batch is refused (convert.check_litert_options)
IN_ALL = False  # --target all leaves it out: name it (all,litert)
