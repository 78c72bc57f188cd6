#include "services/registry_sync/registry_sync_service.h"

namespace elfdeploy {

namespace {

constexpr char kMissing[] = "the OCI registry client lands with the registry-sync issue (#3)";

}  // namespace

grpc::Status RegistrySyncServiceImpl::Copy(grpc::ServerContext* /*context*/,
                                           const v1::CopyRequest* /*request*/,
                                           grpc::ServerWriter<v1::CopyResponse>* /*writer*/) {
  return NotImplementedYet("elfdeploy.v1.RegistrySyncService/Copy", kMissing);
}

grpc::Status RegistrySyncServiceImpl::Resolve(grpc::ServerContext* /*context*/,
                                              const v1::ResolveRequest* /*request*/,
                                              v1::ResolveResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.RegistrySyncService/Resolve", kMissing);
}

grpc::Status RegistrySyncServiceImpl::Sync(grpc::ServerContext* /*context*/,
                                           const v1::SyncRequest* /*request*/,
                                           grpc::ServerWriter<v1::SyncResponse>* /*writer*/) {
  return NotImplementedYet("elfdeploy.v1.RegistrySyncService/Sync", kMissing);
}

std::unique_ptr<ServiceSet> MakeRegistrySyncServices() {
  auto services = std::make_unique<ServiceSet>();
  services->Add(v1::RegistrySyncService::service_full_name(),
                std::make_unique<RegistrySyncServiceImpl>());
  return services;
}

}  // namespace elfdeploy
