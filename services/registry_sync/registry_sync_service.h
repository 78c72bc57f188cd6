#pragma once

#include <memory>

#include "elfdeploy/v1/registry_sync.grpc.pb.h"
#include "services/common/service_main.h"

namespace elfdeploy {

// elfdeploy.v1.RegistrySyncService. Every RPC answers UNIMPLEMENTED until its logic lands: the OCI
// registry client lands with the registry-sync issue (#3).
class RegistrySyncServiceImpl final : public v1::RegistrySyncService::Service {
 public:
  grpc::Status Copy(grpc::ServerContext* context, const v1::CopyRequest* request,
                    grpc::ServerWriter<v1::CopyResponse>* writer) override;
  grpc::Status Resolve(grpc::ServerContext* context, const v1::ResolveRequest* request,
                       v1::ResolveResponse* response) override;
  grpc::Status Sync(grpc::ServerContext* context, const v1::SyncRequest* request,
                    grpc::ServerWriter<v1::SyncResponse>* writer) override;
};

// The registry-sync binary's services.
std::unique_ptr<ServiceSet> MakeRegistrySyncServices();

}  // namespace elfdeploy
