#pragma once

#include <memory>

#include "elfdeploy/v1/registry_sync.grpc.pb.h"
#include "services/common/service_main.h"
#include "services/registry_sync/registry_sync.h"

namespace elfdeploy {

// elfdeploy.v1.RegistrySyncService: a thin adapter over RegistrySync.
class RegistrySyncServiceImpl final : public v1::RegistrySyncService::Service {
 public:
  explicit RegistrySyncServiceImpl(std::unique_ptr<RegistrySync> logic)
      : logic_(std::move(logic)) {}

  grpc::Status Copy(grpc::ServerContext* context, const v1::CopyRequest* request,
                    grpc::ServerWriter<v1::CopyResponse>* writer) override;
  grpc::Status Resolve(grpc::ServerContext* context, const v1::ResolveRequest* request,
                       v1::ResolveResponse* response) override;
  grpc::Status Sync(grpc::ServerContext* context, const v1::SyncRequest* request,
                    grpc::ServerWriter<v1::SyncResponse>* writer) override;

 private:
  std::unique_ptr<RegistrySync> logic_;
};

// The registry-sync binary's services; metrics go to `metrics`.
absl::StatusOr<std::unique_ptr<Component>> MakeRegistrySyncComponent(
    const RegistrySyncOptions& options, const ComponentContext& context);

}  // namespace elfdeploy
