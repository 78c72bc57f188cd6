#include "services/common/proto_time.h"

#include "gtest/gtest.h"

namespace elfdeploy {
namespace {

TEST(ProtoTimeTest, KeepsNanosecondsOnBothSidesOfTheEpoch) {
  const absl::Time after = absl::FromUnixNanos(1'700'000'000'123'456'789);
  google::protobuf::Timestamp stamp = ToTimestamp(after);
  EXPECT_EQ(stamp.seconds(), 1'700'000'000);
  EXPECT_EQ(stamp.nanos(), 123'456'789);
  EXPECT_EQ(FromTimestamp(stamp), after);

  const absl::Time before = absl::FromUnixNanos(-1'500'000'000);  // 1969-12-31T23:59:58.5Z
  stamp = ToTimestamp(before);
  EXPECT_EQ(stamp.seconds(), -2);
  EXPECT_EQ(stamp.nanos(), 500'000'000);
  EXPECT_EQ(FromTimestamp(stamp), before);
}

TEST(ProtoTimeTest, OnlyTheDefaultTimestampIsUnset) {
  EXPECT_FALSE(IsSet(google::protobuf::Timestamp()));
  EXPECT_TRUE(IsSet(ToTimestamp(absl::UnixEpoch() + absl::Nanoseconds(1))));
  EXPECT_TRUE(IsSet(ToTimestamp(absl::UnixEpoch() - absl::Seconds(1))));
}

}  // namespace
}  // namespace elfdeploy
