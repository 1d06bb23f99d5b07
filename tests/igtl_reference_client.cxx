// A client built against the reference OpenIGTLink C++ library (Debian's libopenigtlink-dev, protocol
// header v1), used by tests/test_igtl_reference_lib.py: it sends FRAMES 8-bit IMAGE frames (a bright line on
// dark speckle) to `serve-igtl --header-version 1`, reads the replies after each frame and unpacks every one
// with the library's CRC check. Prints one line "TYPE DEVICE" per reply and a final "ok N" or "FAIL ...".
//
//   igtl_reference_client HOST PORT FRAMES REPLIES_PER_FRAME
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "igtlClientSocket.h"
#include "igtlImageMessage.h"
#include "igtlMessageHeader.h"
#include "igtlOSUtil.h"
#include "igtlPointMessage.h"
#include "igtlStringMessage.h"
#include "igtlTimeStamp.h"
#include "igtlTransformMessage.h"

static int fail(const std::string& why) {
  std::printf("FAIL %s\n", why.c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 5) return fail("usage: HOST PORT FRAMES REPLIES_PER_FRAME");
  const char* host = argv[1];
  int port = std::atoi(argv[2]);
  int frames = std::atoi(argv[3]);
  int per_frame = std::atoi(argv[4]);

  igtl::ClientSocket::Pointer sock = igtl::ClientSocket::New();
  int r = -1;
  for (int attempt = 0; attempt < 200 && r != 0; ++attempt) {  // the server may still be starting
    r = sock->ConnectToServer(host, port);
    if (r != 0) igtl::Sleep(50);
  }
  if (r != 0) return fail("cannot connect");
  sock->SetReceiveTimeout(10000);

  const int w = 64, h = 64;
  int replies = 0;
  for (int i = 0; i < frames; ++i) {
    igtl::ImageMessage::Pointer img = igtl::ImageMessage::New();
    int size[3] = {w, h, 1};
    float spacing[3] = {0.2f, 0.2f, 1.0f};
    img->SetDimensions(size);
    img->SetSpacing(spacing);
    img->SetScalarType(igtl::ImageMessage::TYPE_UINT8);
    img->SetDeviceName("Image_Reference");
    img->AllocateScalars();
    unsigned char* px = static_cast<unsigned char*>(img->GetScalarPointer());
    for (int k = 0; k < w * h; ++k) px[k] = static_cast<unsigned char>((k * 7919 + i * 31) % 60);
    int x1 = 12 + i < w - 4 ? 12 + i : w - 4, y1 = 8 + i / 2 < h - 4 ? 8 + i / 2 : h - 4;
    for (int t = 0; t <= 256; ++t) {
      int x = 2 + (x1 - 2) * t / 256, y = 2 + (y1 - 2) * t / 256;
      px[y * w + x] = 255;
    }
    igtl::Matrix4x4 m;
    igtl::IdentityMatrix(m);
    img->SetMatrix(m);
    igtl::TimeStamp::Pointer ts = igtl::TimeStamp::New();
    ts->SetTime(100.0 + i * 0.05);
    img->SetTimeStamp(ts);
    img->Pack();
    if (sock->Send(img->GetPackPointer(), img->GetPackSize()) == 0) return fail("send failed");

    for (int k = 0; k < per_frame; ++k) {
      igtl::MessageHeader::Pointer hdr = igtl::MessageHeader::New();
      hdr->InitPack();
      int got = sock->Receive(hdr->GetPackPointer(), hdr->GetPackSize());
      if (got != hdr->GetPackSize()) return fail("no reply header (frame " + std::to_string(i) + ")");
      hdr->Unpack();
      std::string type = hdr->GetDeviceType();
      igtl::MessageBase::Pointer body;
      if (type == "IMAGE") body = igtl::ImageMessage::New();
      else if (type == "POINT") body = igtl::PointMessage::New();
      else if (type == "STRING") body = igtl::StringMessage::New();
      else if (type == "TRANSFORM") body = igtl::TransformMessage::New();
      else return fail("unexpected message type " + type);
      body->SetMessageHeader(hdr);
      body->AllocatePack();
      if (body->GetPackBodySize() > 0) {
        got = sock->Receive(body->GetPackBodyPointer(), body->GetPackBodySize());
        if (got != body->GetPackBodySize()) return fail("short body of " + type);
      }
      int c = body->Unpack(1);  // 1: check the CRC
      if (!(c & igtl::MessageHeader::UNPACK_BODY)) return fail("CRC or body check failed on " + type);
      std::printf("%s %s\n", type.c_str(), hdr->GetDeviceName());
      if (type == "STRING") {
        igtl::StringMessage* s = dynamic_cast<igtl::StringMessage*>(body.GetPointer());
        std::printf("status %s\n", s->GetString());
      }
      ++replies;
    }
  }
  sock->CloseSocket();
  std::printf("ok %d\n", replies);
  return 0;
}
