"""The native C++ rules under the names Bazel 4's own tools load from @rules_cc//cc:defs.bzl.

Stands in for rules_cc, which Bazel would download; Debian's bazel-rules-cc is written for a
newer Bazel than Debian's Bazel 4 and fails to load.
"""

def cc_binary(**attrs):
    native.cc_binary(**attrs)

def cc_import(**attrs):
    native.cc_import(**attrs)

def cc_library(**attrs):
    native.cc_library(**attrs)

def cc_proto_library(**attrs):
    native.cc_proto_library(**attrs)

def cc_test(**attrs):
    native.cc_test(**attrs)

def cc_toolchain(**attrs):
    native.cc_toolchain(**attrs)

def cc_toolchain_suite(**attrs):
    native.cc_toolchain_suite(**attrs)

def objc_library(**attrs):
    native.objc_library(**attrs)
