// CHECK and LOG for building DeepMind Lab against an Abseil that predates absl/log (Debian
// bookworm ships 20220623; absl/log came in 20230125). Installed as both absl/log/check.h and
// absl/log/log.h. Failed checks and FATAL logs abort, like Abseil's; values are not printed.
#ifndef DMLAB_SYSTEM_ABSL_LOG_H_
#define DMLAB_SYSTEM_ABSL_LOG_H_

#include <cstdlib>
#include <iostream>
#include <sstream>

namespace dmlab_absl_log {

enum Severity { INFO, WARNING, ERROR, FATAL, QFATAL };

class Message {
 public:
  Message(const char* file, int line, Severity severity) : severity_(severity) {
    stream_ << "IWEFF"[severity] << " " << file << ":" << line << "] ";
  }
  ~Message() {
    std::cerr << stream_.str() << std::endl;
    if (severity_ == FATAL) std::abort();
    if (severity_ == QFATAL) std::_Exit(1);
  }
  std::ostream& stream() { return stream_; }

 private:
  Severity severity_;
  std::ostringstream stream_;
};

// Gives `cond ? (void)0 : Voidify() & stream << ...` one type on both branches.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace dmlab_absl_log

#define LOG(severity) \
  ::dmlab_absl_log::Message(__FILE__, __LINE__, ::dmlab_absl_log::severity).stream()
#define LOG_IF(severity, cond) !(cond) ? (void)0 : ::dmlab_absl_log::Voidify() & LOG(severity)
#define CHECK(cond) LOG_IF(FATAL, !(cond)) << "Check failed: " #cond " "
#define QCHECK(cond) LOG_IF(QFATAL, !(cond)) << "Check failed: " #cond " "
#define DMLAB_CHECK_OP(a, op, b) CHECK((a)op(b))
#define CHECK_EQ(a, b) DMLAB_CHECK_OP(a, ==, b)
#define CHECK_NE(a, b) DMLAB_CHECK_OP(a, !=, b)
#define CHECK_LT(a, b) DMLAB_CHECK_OP(a, <, b)
#define CHECK_LE(a, b) DMLAB_CHECK_OP(a, <=, b)
#define CHECK_GT(a, b) DMLAB_CHECK_OP(a, >, b)
#define CHECK_GE(a, b) DMLAB_CHECK_OP(a, >=, b)

#endif  // DMLAB_SYSTEM_ABSL_LOG_H_
