"""The native Java rules under the names Bazel 4's own tools load from @rules_java//java:defs.bzl.

Stands in for rules_java, which Bazel would download: Bazel's tools/jdk package loads it while
toolchains are resolved, though nothing here is built with Java.
"""

def java_binary(**attrs):
    native.java_binary(**attrs)

def java_import(**attrs):
    native.java_import(**attrs)

def java_library(**attrs):
    native.java_library(**attrs)

def java_runtime(**attrs):
    native.java_runtime(**attrs)

def java_toolchain(**attrs):
    native.java_toolchain(**attrs)
