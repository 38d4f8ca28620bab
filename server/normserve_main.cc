// normserve: the server binary (flags: server_main.cc).
#include "server/server_main.h"

int main(int argc, char** argv) {
  return normserve::ServerMain(argc, argv, normserve::MainOptions());
}
